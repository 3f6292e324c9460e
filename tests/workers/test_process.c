/*
 * test_process.c — unit tests for workers/process.c: the JSONPath subset (definite and wildcard
 * paths, Jayway's missing-value rules, every syntax refusal), the built-in pre-process functions
 * (parameter maps per upstream request, escaping, UTF-8, step splitting, exact messages) and the
 * built-in post-process functions over realistic provider responses (OpenAI, Cohere v1/v2,
 * Bedrock Titan, default embedding, Cohere/default/Bedrock rerank) plus the default "response"
 * tensor with and without response_filter, and the shortest round-trip form of doubles.
 *
 * Each case listed in main() is registered as its own ctest case and run as `<exe> <name>`.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "workers.h"

#define JSON_TEXT (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)
#define EXEC_FAILED "Fail to execute predict in aws connector"
#define STEP_INVALID                                                                               \
    "Invalid parameter: input_docs_processed_step_size. It must be positive integer."
#define PRE(x) "connector.pre_process." x
#define POST(x) "connector.post_process." x

/* ------------------------------------------------------------------------------------------ */
/* Helpers                                                                                    */
/* ------------------------------------------------------------------------------------------ */

static struct json_object *parse(const char *text)
{
    struct json_tokener *tok = json_tokener_new();
    struct json_object *o = json_tokener_parse_ex(tok, text, -1); /* -1: up to the NUL */
    enum json_tokener_error err = json_tokener_get_error(tok);
    json_tokener_free(tok);
    if (err != json_tokener_success)
        fail_msg("test JSON does not parse: %s", text);
    return o;
}

static void assert_json(struct json_object *o, const char *want)
{
    assert_string_equal(json_object_to_json_string_ext(o, JSON_TEXT), want);
}

/* Sentinel for "the out-param was not written". */
static char untouched_storage; /* its address only; never dereferenced as a json_object */
#define UNTOUCHED ((struct json_object *)(void *)&untouched_storage)

/* ---- JSONPath ---- */

/* Evaluates @path over the JSON @doc and asserts MLR_OK with the compact text @want. */
static void path_ok(const char *doc, const char *path, const char *want)
{
    struct workers_error e;
    struct json_object *root = parse(doc), *out = UNTOUCHED;
    int rc = workers_jsonpath(root, path, &out, &e);
    if (rc != MLR_OK)
        fail_msg("jsonpath %s over %s: rc %d: %s", path, doc, rc, e.reason);
    assert_json(out, want);
    json_object_put(out);
    json_object_put(root);
}

/* Asserts that @path over @doc fails with @want_rc/@want_status, out untouched; returns the
 * reason in @reason. */
static void path_err(const char *doc, const char *path, int want_rc, int want_status, char *reason,
                     size_t len)
{
    struct workers_error e = {0};
    struct json_object *root = parse(doc), *out = UNTOUCHED;
    int rc = workers_jsonpath(root, path, &out, &e);
    if (rc != want_rc)
        fail_msg("jsonpath [%s] over %s: rc %d, wanted %d", path, doc, rc, want_rc);
    assert_int_equal(e.status, want_status);
    assert_ptr_equal(out, UNTOUCHED);
    if (reason)
        snprintf(reason, len, "%s", e.reason);
    json_object_put(root);
}

/* ---- pre-process ---- */

/* Runs @fn over the JSON docs @docs and asserts the compact requests array @want. */
static void pre_ok(const char *fn, const char *docs, const char *query, int step, const char *want)
{
    struct workers_error e;
    struct json_object *d = parse(docs), *out = UNTOUCHED;
    int rc = workers_preprocess_step(fn, d, query, step, &out, &e);
    if (rc != MLR_OK)
        fail_msg("preprocess %s: rc %d: %s", fn ? fn : "(default)", rc, e.reason);
    assert_json(out, want);
    json_object_put(out);
    json_object_put(d);
}

/* Asserts a 400 with exactly @want and the out-param untouched. @docs may be NULL. */
static void pre_err(const char *fn, const char *docs, const char *query, int step, const char *want)
{
    struct workers_error e = {0};
    struct json_object *d = docs ? parse(docs) : NULL, *out = UNTOUCHED;
    int rc = workers_preprocess_step(fn, d, query, step, &out, &e);
    assert_int_equal(rc, MLR_EINVAL);
    assert_int_equal(e.status, 400);
    assert_string_equal(e.type, "illegal_argument_exception");
    assert_string_equal(e.reason, want);
    assert_ptr_equal(out, UNTOUCHED);
    json_object_put(d);
}

/* The value of @key in request @i of @reqs, as a C string. */
static const char *req_param(struct json_object *reqs, size_t i, const char *key)
{
    struct json_object *v = NULL;
    assert_true(json_object_object_get_ex(json_object_array_get_idx(reqs, i), key, &v));
    assert_true(json_object_is_type(v, json_type_string));
    return json_object_get_string(v);
}

/* ---- post-process ---- */

/* Post-processes the JSON @response and asserts the compact output @want. */
static void post_ok(const char *fn, const char *filter, const char *response, int ndocs,
                    const char *want)
{
    struct workers_error e;
    struct json_object *r = parse(response), *out = UNTOUCHED;
    int rc = workers_postprocess(fn, filter, r, ndocs, &out, &e);
    if (rc != MLR_OK)
        fail_msg("postprocess %s over %s: rc %d: %s", fn ? fn : "(none)", response, rc, e.reason);
    json_object_put(r); /* the output must not depend on the caller keeping the response */
    assert_json(out, want);
    json_object_put(out);
}

/* Asserts the failure @want_status/@want_reason, the out-param untouched. */
static void post_err(const char *fn, const char *filter, const char *response, int ndocs,
                     int want_status, const char *want_reason)
{
    struct workers_error e = {0};
    struct json_object *r = parse(response), *out = UNTOUCHED;
    int rc = workers_postprocess(fn, filter, r, ndocs, &out, &e);
    assert_int_not_equal(rc, MLR_OK);
    assert_int_equal(e.status, want_status);
    assert_string_equal(e.type,
                        want_status == 500 ? "m_l_exception" : "illegal_argument_exception");
    assert_string_equal(e.reason, want_reason);
    assert_int_equal(rc, want_status == 500 ? MLR_EINTERNAL : MLR_EINVAL);
    assert_ptr_equal(out, UNTOUCHED);
    json_object_put(r);
}

/* ------------------------------------------------------------------------------------------ */
/* JSONPath                                                                                   */
/* ------------------------------------------------------------------------------------------ */

static void jsonpath_root(void **state)
{
    (void)state;
    struct workers_error e;
    struct json_object *root = parse("{\"a\":1}"), *out = NULL;
    assert_int_equal(workers_jsonpath(root, "$", &out, &e), MLR_OK);
    assert_ptr_equal(out, root); /* the same value, one more reference */
    json_object_put(out);
    assert_json(root, "{\"a\":1}");
    json_object_put(root);
    path_ok("[1,2]", "$", "[1,2]");
    path_ok("\"text\"", "$", "\"text\"");
}

static void jsonpath_fields(void **state)
{
    (void)state;
    const char *doc = "{\"a\":{\"b\":{\"c\":[1,2]},\"x y\":5,\"it's\":6,\"q\\\"\":7},\"n\":3}";
    path_ok(doc, "$.a.b.c", "[1,2]");
    path_ok(doc, "$['a']['b']", "{\"c\":[1,2]}");
    path_ok(doc, "$[\"a\"][\"b\"].c", "[1,2]");
    path_ok(doc, "$[ 'a' ].b", "{\"c\":[1,2]}");
    path_ok(doc, "$.['a'].b.c", "[1,2]"); /* Jayway accepts ".[" */
    path_ok(doc, "a.b.c", "[1,2]");       /* no "$": read as "$.a.b.c" */
    path_ok(doc, "$.n", "3");
    path_ok(doc, "$.a['x y']", "5");
    path_ok(doc, "$.a['it\\'s']", "6");
    path_ok(doc, "$.a[\"q\\\"\"]", "7");
}

static void jsonpath_indexes(void **state)
{
    (void)state;
    const char *doc = "{\"a\":[[10,11],[20,21,22]],\"o\":{\"0\":1}}";
    path_ok(doc, "$.a[0]", "[10,11]");
    path_ok(doc, "$.a[1][2]", "22");
    path_ok(doc, "$.a[-1][-3]", "20");
    path_ok(doc, "$.a[-2][0]", "10");
    path_ok("[7]", "$[0]", "7");
    path_ok("[7]", "[0]", "7");
    char reason[1024];
    path_err(doc, "$.a[2]", MLR_ENOTFOUND, 404, reason, sizeof(reason));
    assert_string_equal(reason, "No results for path: $.a[2]");
    path_err(doc, "$.a[-3]", MLR_ENOTFOUND, 404, NULL, 0);
    path_err(doc, "$.o[0]", MLR_ENOTFOUND, 404, NULL, 0); /* an index applies to arrays only */
    path_err(doc, "$.a.x", MLR_ENOTFOUND, 404, NULL, 0);  /* a field applies to objects only */
}

static void jsonpath_wildcards(void **state)
{
    (void)state;
    const char *openai = "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,"
                         "\"embedding\":[0.1,0.2]},{\"index\":1,\"embedding\":[0.3,0.4]}]}";
    path_ok(openai, "$.data[*].embedding", "[[0.1,0.2],[0.3,0.4]]");
    path_ok(openai, "$.data[*].index", "[0,1]");
    path_ok(openai, "$.data.*.index", "[0,1]");
    path_ok(openai, "$.data[*].embedding[*]", "[0.1,0.2,0.3,0.4]"); /* flat, as Jayway */
    path_ok(openai, "$.data[*].embedding[-1]", "[0.2,0.4]");
    path_ok(openai, "$.data[*].object", "[\"embedding\"]"); /* missing fields drop out */
    path_ok(openai, "$.data[*].nope.deeper", "[]");
    path_ok(openai, "$.data[5][*]", "[]"); /* index out of range before: empty */
    path_ok(openai, "$.object[*]", "[]");  /* a wildcard over a scalar */
    path_ok("{\"b\":1,\"a\":[2],\"c\":null}", "$.*", "[1,[2],null]"); /* object order */
    path_ok("{\"b\":1,\"a\":[2]}", "$[*]", "[1,[2]]");
    path_ok("[[1,2],[3],[]]", "$[*][*]", "[1,2,3]");
    path_ok("[[1,2],[3],[]]", "$[*]", "[[1,2],[3],[]]");
    path_ok("[{\"a\":1},2,{\"a\":null}]", "[*].a", "[1,null]");
    /* Before the first wildcard, a missing field is "not found" as in Jayway. */
    path_err(openai, "$.nope[*].embedding", MLR_ENOTFOUND, 404, NULL, 0);
    path_err(openai, "$.object.x[*]", MLR_ENOTFOUND, 404, NULL, 0);
}

static void jsonpath_null_values(void **state)
{
    (void)state;
    struct workers_error e;
    struct json_object *root = parse("{\"a\":null}"), *out = UNTOUCHED;
    assert_int_equal(workers_jsonpath(root, "$.a", &out, &e), MLR_OK);
    assert_null(out); /* JSON null is json-c's NULL */
    path_err("{\"a\":null}", "$.a.b", MLR_ENOTFOUND, 404, NULL, 0);
    path_err("{\"a\":null}", "$.b", MLR_ENOTFOUND, 404, NULL, 0);
    json_object_put(root);
    out = UNTOUCHED;
    assert_int_equal(workers_jsonpath(NULL, "$", &out, &e), MLR_OK);
    assert_null(out);
    out = UNTOUCHED;
    assert_int_equal(workers_jsonpath(NULL, "$.a", &out, &e), MLR_ENOTFOUND);
    assert_ptr_equal(out, UNTOUCHED);
}

static void jsonpath_syntax_errors(void **state)
{
    (void)state;
    static const char *const bad_paths[] = {
        "",      "$.",     "$..a", "$.a.", "$[?(@.a > 1)]",  "$[0:2]",     "$[0,1]",  "$['a','b']",
        "$['a'", "$[abc]", "$[",   "$[0",  "$.a(",           "$.length()", "$a",      "$.a b",
        "$[*",   "$[-]",   "$]",   "$.a]", "$[99999999999]", "..a",        "$['a']x", "$.a.[",
    };
    for (size_t i = 0; i < sizeof(bad_paths) / sizeof(bad_paths[0]); i++) {
        char reason[1024];
        path_err("{\"a\":[1]}", bad_paths[i], MLR_EINVAL, 400, reason, sizeof(reason));
        if (strncmp(reason, "Invalid JSONPath", 16) != 0)
            fail_msg("[%s]: %s", bad_paths[i], reason);
    }
    char reason[1024];
    path_err("{}", "$..a", MLR_EINVAL, 400, reason, sizeof(reason));
    assert_string_equal(reason, "Invalid JSONPath [$..a]: deep scan (..) is not supported at "
                                "position 2");
    path_err("{}", "$[?(@.a)]", MLR_EINVAL, 400, reason, sizeof(reason));
    assert_string_equal(reason, "Invalid JSONPath [$[?(@.a)]]: filters are not supported at "
                                "position 2");
    path_err("{}", "$.data[0:2]", MLR_EINVAL, 400, reason, sizeof(reason));
    assert_string_equal(reason, "Invalid JSONPath [$.data[0:2]]: slices and unions are not "
                                "supported at position 8");
    path_err("{}", "", MLR_EINVAL, 400, reason, sizeof(reason));
    assert_string_equal(reason, "Invalid JSONPath []: the path is empty at position 0");
}

static void jsonpath_limits(void **state)
{
    (void)state;
    /* 64 steps are fine, 65 are refused. */
    char path[1100] = "$";
    for (int i = 0; i < 64; i++)
        strcat(path, "[0]");
    char doc[300] = "";
    for (int i = 0; i < 64; i++)
        strcat(doc, "[");
    strcat(doc, "7");
    for (int i = 0; i < 64; i++)
        strcat(doc, "]");
    struct json_tokener *tok = json_tokener_new_ex(100);
    struct json_object *root = json_tokener_parse_ex(tok, doc, (int)strlen(doc));
    json_tokener_free(tok);
    assert_non_null(root);
    struct workers_error e;
    struct json_object *out = NULL;
    assert_int_equal(workers_jsonpath(root, path, &out, &e), MLR_OK);
    assert_json(out, "7");
    json_object_put(out);
    strcat(path, "[0]");
    out = UNTOUCHED;
    assert_int_equal(workers_jsonpath(root, path, &out, &e), MLR_EINVAL);
    char want[1300];
    snprintf(want, sizeof(want), "Invalid JSONPath [%s]: more than 64 steps at position 193", path);
    assert_string_equal(e.reason, want);
    assert_ptr_equal(out, UNTOUCHED);
    json_object_put(root);
    /* Over 1024 bytes. */
    char lng[1100];
    memset(lng, 'a', sizeof(lng) - 1);
    lng[0] = '$';
    lng[1] = '.';
    lng[sizeof(lng) - 1] = '\0';
    char reason[1024];
    path_err("{}", lng, MLR_EINVAL, 400, reason, sizeof(reason));
    assert_string_equal(reason, "Invalid JSONPath: longer than 1024 bytes");
    lng[1024] = '\0'; /* exactly 1024 bytes: compiles, names nothing */
    path_err("{}", lng, MLR_ENOTFOUND, 404, NULL, 0);
}

/* ------------------------------------------------------------------------------------------ */
/* Pre-process                                                                                */
/* ------------------------------------------------------------------------------------------ */

static void preprocess_openai_default_cohere(void **state)
{
    (void)state;
    const char *docs = "[\"hello world\",\"second doc\"]";
    pre_ok(PRE("openai.embedding"), docs, NULL, 0,
           "[{\"input\":\"[\\\"hello world\\\",\\\"second doc\\\"]\"}]");
    pre_ok(PRE("default.embedding"), docs, NULL, 0,
           "[{\"input\":\"[\\\"hello world\\\",\\\"second doc\\\"]\"}]");
    pre_ok(NULL, docs, "ignored", 0, "[{\"input\":\"[\\\"hello world\\\",\\\"second doc\\\"]\"}]");
    pre_ok(PRE("cohere.embedding"), docs, NULL, 0,
           "[{\"texts\":\"[\\\"hello world\\\",\\\"second doc\\\"]\"}]");
    /* The C string value is exactly the compact JSON array. */
    struct workers_error e;
    struct json_object *d = parse(docs), *reqs = NULL;
    assert_int_equal(workers_preprocess(NULL, d, NULL, &reqs, &e), MLR_OK);
    assert_int_equal(json_object_array_length(reqs), 1);
    assert_string_equal(req_param(reqs, 0, "input"), "[\"hello world\",\"second doc\"]");
    json_object_put(reqs);
    json_object_put(d);
}

static void preprocess_escaping_and_utf8(void **state)
{
    (void)state;
    struct workers_error e;
    struct json_object *d = parse("[\"Mo\\u00ebt Hennessy\",\"say \\\"hi\\\" \\\\ a/b\\n\\tend\","
                                  "\"{\\\"looks\\\":\\\"like json\\\"}\",\"nul\\u0000x\"]");
    struct json_object *reqs = NULL;
    assert_int_equal(workers_preprocess(PRE("openai.embedding"), d, NULL, &reqs, &e), MLR_OK);
    const char *input = req_param(reqs, 0, "input");
    assert_string_equal(input, "[\"Mo\xc3\xabt Hennessy\",\"say \\\"hi\\\" \\\\ a/b\\n\\tend\","
                               "\"{\\\"looks\\\":\\\"like json\\\"}\",\"nul\\u0000x\"]");
    struct json_object *back = parse(input); /* the text is JSON that reads back as the docs */
    assert_true(json_object_equal(back, d));
    json_object_put(back);
    json_object_put(reqs);
    /* Bedrock: each doc escaped as the contents of a JSON string, by type, UTF-8 kept. */
    assert_int_equal(workers_preprocess(PRE("bedrock.embedding"), d, NULL, &reqs, &e), MLR_OK);
    assert_int_equal(json_object_array_length(reqs), 4);
    assert_string_equal(req_param(reqs, 0, "inputText"), "Mo\xc3\xabt Hennessy");
    assert_string_equal(req_param(reqs, 1, "inputText"), "say \\\"hi\\\" \\\\ a/b\\n\\tend");
    assert_string_equal(req_param(reqs, 2, "inputText"), "{\\\"looks\\\":\\\"like json\\\"}");
    assert_string_equal(req_param(reqs, 3, "inputText"), "nul\\u0000x");
    json_object_put(reqs);
    json_object_put(d);
}

static void preprocess_bedrock_per_doc(void **state)
{
    (void)state;
    pre_ok(PRE("bedrock.embedding"), "[\"a\",\"b\",\"c\"]", NULL, 0,
           "[{\"inputText\":\"a\"},{\"inputText\":\"b\"},{\"inputText\":\"c\"}]");
    pre_ok(PRE("bedrock.embedding"), "[\"a\",\"b\",\"c\"]", NULL, 2,
           "[{\"inputText\":\"a\"},{\"inputText\":\"b\"},{\"inputText\":\"c\"}]");
}

static void preprocess_rerank(void **state)
{
    (void)state;
    const char *docs = "[\"Paris is in France\",\"Berlin \\\"DE\\\"\",\"Mo\\u00ebt\"]";
    const char *want = "[{\"query\":\"capital of \\\\\\\"France\\\\\\\"?\","
                       "\"documents\":\"[\\\"Paris is in France\\\",\\\"Berlin \\\\\\\"DE\\\\\\\""
                       "\\\",\\\"Mo\xc3\xabt\\\"]\",\"top_n\":\"3\"}]";
    pre_ok(PRE("cohere.rerank"), docs, "capital of \"France\"?", 0, want);
    pre_ok(PRE("default.rerank"), docs, "capital of \"France\"?", 0, want);
    pre_ok(PRE("cohere.rerank"), docs, "capital of \"France\"?", 1, want); /* never split */
    struct workers_error e;
    struct json_object *d = parse(docs), *reqs = NULL;
    assert_int_equal(workers_preprocess(PRE("cohere.rerank"), d, "q \"x\"\n", &reqs, &e), MLR_OK);
    assert_string_equal(req_param(reqs, 0, "query"), "q \\\"x\\\"\\n");
    assert_string_equal(req_param(reqs, 0, "documents"),
                        "[\"Paris is in France\",\"Berlin \\\"DE\\\"\",\"Mo\xc3\xabt\"]");
    assert_string_equal(req_param(reqs, 0, "top_n"), "3");
    json_object_put(reqs);
    json_object_put(d);
}

static void preprocess_bedrock_rerank(void **state)
{
    (void)state;
    struct workers_error e;
    struct json_object *d = parse("[\"doc \\\"one\\\"\",\"two\"]"), *reqs = NULL;
    assert_int_equal(workers_preprocess(PRE("bedrock.rerank"), d, "what \"q\"", &reqs, &e), MLR_OK);
    assert_int_equal(json_object_array_length(reqs), 1);
    assert_string_equal(req_param(reqs, 0, "queries"),
                        "[{\"type\":\"TEXT\",\"textQuery\":{\"text\":\"what \\\"q\\\"\"}}]");
    assert_string_equal(req_param(reqs, 0, "sources"),
                        "[{\"type\":\"INLINE\",\"inlineDocumentSource\":{\"type\":\"TEXT\","
                        "\"textDocument\":{\"text\":\"doc \\\"one\\\"\"}}},"
                        "{\"type\":\"INLINE\",\"inlineDocumentSource\":{\"type\":\"TEXT\","
                        "\"textDocument\":{\"text\":\"two\"}}}]");
    assert_string_equal(req_param(reqs, 0, "numberOfResults"), "2");
    json_object_put(reqs);
    json_object_put(d);
}

static void preprocess_step_splitting(void **state)
{
    (void)state;
    const char *docs = "[\"a\",\"b\",\"c\",\"d\",\"e\"]";
    pre_ok(PRE("openai.embedding"), docs, NULL, 2,
           "[{\"input\":\"[\\\"a\\\",\\\"b\\\"]\"},{\"input\":\"[\\\"c\\\",\\\"d\\\"]\"},"
           "{\"input\":\"[\\\"e\\\"]\"}]");
    pre_ok(PRE("cohere.embedding"), docs, NULL, 1,
           "[{\"texts\":\"[\\\"a\\\"]\"},{\"texts\":\"[\\\"b\\\"]\"},{\"texts\":\"[\\\"c\\\"]\"},"
           "{\"texts\":\"[\\\"d\\\"]\"},{\"texts\":\"[\\\"e\\\"]\"}]");
    const char *one = "[{\"input\":\"[\\\"a\\\",\\\"b\\\",\\\"c\\\",\\\"d\\\",\\\"e\\\"]\"}]";
    pre_ok(NULL, docs, NULL, 5, one);
    pre_ok(NULL, docs, NULL, 6, one);
    pre_ok(NULL, docs, NULL, 2147483647, one);
    pre_ok(NULL, docs, NULL, 0, one); /* 0 = parameter not set */
}

static void preprocess_step_invalid(void **state)
{
    (void)state;
    pre_err(NULL, "[\"a\"]", NULL, -1, STEP_INVALID);
    pre_err(PRE("cohere.rerank"), "[\"a\"]", "q", -5, STEP_INVALID);
    struct workers_error e = {0};
    int step = -99;
    assert_int_equal(workers_step_parse(NULL, &step, &e), MLR_OK);
    assert_int_equal(step, 0);
    assert_int_equal(workers_step_parse("3", &step, &e), MLR_OK);
    assert_int_equal(step, 3);
    assert_int_equal(workers_step_parse("+7", &step, &e), MLR_OK);
    assert_int_equal(step, 7);
    assert_int_equal(workers_step_parse("2147483647", &step, &e), MLR_OK);
    assert_int_equal(step, 2147483647);
    static const char *const not_positive[] = {"0", "-1", "-0", "+0", "-2147483648"};
    for (size_t i = 0; i < sizeof(not_positive) / sizeof(not_positive[0]); i++) {
        step = -99;
        assert_int_equal(workers_step_parse(not_positive[i], &step, &e), MLR_EINVAL);
        assert_int_equal(e.status, 400);
        assert_string_equal(e.reason, STEP_INVALID);
        assert_int_equal(step, -99);
    }
    static const char *const not_int[] = {
        "",    "abc", "1.5",        " 2",          "2 ",
        "+",   "-",   "2147483648", "-2147483649", "99999999999999999999",
        "0x10"};
    for (size_t i = 0; i < sizeof(not_int) / sizeof(not_int[0]); i++) {
        char want[128];
        snprintf(want, sizeof(want), "For input string: \"%s\"", not_int[i]);
        assert_int_equal(workers_step_parse(not_int[i], &step, &e), MLR_EINVAL);
        assert_int_equal(e.status, 400);
        assert_string_equal(e.reason, want);
        assert_int_equal(step, -99);
    }
}

static void preprocess_errors(void **state)
{
    (void)state;
    pre_err(PRE("painless.custom"), "[\"a\"]", NULL, 0,
            "Unsupported pre_process_function [connector.pre_process.painless.custom]: mlrelay "
            "runs only the built-in connector functions (Painless scripts are not supported)");
    pre_err(PRE("openai.embedding"), NULL, NULL, 0,
            "pre_process_function [connector.pre_process.openai.embedding] needs \"text_docs\", "
            "a list of strings");
    pre_err(NULL, "{\"a\":1}", NULL, 0,
            "pre_process_function [connector.pre_process.default.embedding] needs "
            "\"text_docs\", a list of strings");
    pre_err(PRE("bedrock.embedding"), "[]", NULL, 0, "Empty text docs");
    pre_err(PRE("cohere.embedding"), "[\"a\",1]", NULL, 0,
            "\"text_docs\" must be a list of strings");
    pre_err(PRE("cohere.embedding"), "[\"a\",null]", NULL, 0,
            "\"text_docs\" must be a list of strings");
    pre_err(PRE("cohere.rerank"), "[\"a\"]", NULL, 0,
            "pre_process_function [connector.pre_process.cohere.rerank] needs \"query_text\" "
            "and \"text_docs\"");
    pre_err(PRE("bedrock.rerank"), NULL, "q", 0,
            "pre_process_function [connector.pre_process.bedrock.rerank] needs \"query_text\" "
            "and \"text_docs\"");
    pre_err(PRE("default.rerank"), "[]", "q", 0, "Empty text docs");
}

/* Every name connector.c accepts runs here, and no other: candidates are crossed with
 * workers_function_known() in both directions. */
static void function_tables_match_connector(void **state)
{
    (void)state;
    static const char *const providers[] = {"openai",    "cohere",       "cohere_v2", "default",
                                            "bedrock",   "bedrock_v2",   "sagemaker", "nova",
                                            "mlcommons", "bedrock.nova", "OpenAI",    ""};
    static const char *const kinds[] = {
        "embedding",       "rerank",           "embedding.float",   "embedding.int8",
        "embedding.uint8", "embedding.binary", "embedding.ubinary", "multimodal_embedding",
        "batch_job_arn",   "passthrough",      "embedding.FLOAT",   "embedding.float32",
    };
    struct json_object *docs = parse("[\"a\"]"), *resp = parse("{}");
    int known_pre = 0, known_post = 0;
    for (size_t p = 0; p < sizeof(providers) / sizeof(providers[0]); p++) {
        for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
            char pre[128], post[128];
            snprintf(pre, sizeof(pre), "connector.pre_process.%s.%s", providers[p], kinds[k]);
            snprintf(post, sizeof(post), "connector.post_process.%s.%s", providers[p], kinds[k]);
            struct workers_error e = {0};
            struct json_object *out = NULL;
            int rc = workers_preprocess(pre, docs, "q", &out, &e);
            json_object_put(rc == MLR_OK ? out : NULL);
            int ours = rc == MLR_OK;
            if (ours != workers_function_known(pre, 0))
                fail_msg("%s: process.c %d, connector.c %d", pre, ours, !ours);
            known_pre += ours;
            out = NULL;
            memset(&e, 0, sizeof(e));
            rc = workers_postprocess(post, NULL, resp, 1, &out, &e);
            json_object_put(rc == MLR_OK ? out : NULL);
            ours = strstr(e.reason, "Unsupported post_process_function") == NULL;
            if (ours != workers_function_known(post, 1))
                fail_msg("%s: process.c %d, connector.c %d", post, ours, !ours);
            known_post += ours;
        }
    }
    assert_int_equal(known_pre, 7);
    assert_int_equal(known_post, 12);
    json_object_put(docs);
    json_object_put(resp);
}

/* ------------------------------------------------------------------------------------------ */
/* Post-process: embeddings                                                                   */
/* ------------------------------------------------------------------------------------------ */

static void postprocess_openai_embedding(void **state)
{
    (void)state;
    post_ok(POST("openai.embedding"), NULL,
            "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,"
            "\"embedding\":[-0.0043460787,-0.029653417,0.0123]},{\"object\":\"embedding\","
            "\"index\":1,\"embedding\":[0.5,1.0E-4,-2]}],\"model\":\"text-embedding-3-small\","
            "\"usage\":{\"prompt_tokens\":8,\"total_tokens\":8}}",
            2,
            "[{\"name\":\"sentence_embedding\",\"data_type\":\"FLOAT32\",\"shape\":[3],"
            "\"data\":[-0.0043460787,-0.029653417,0.0123]},"
            "{\"name\":\"sentence_embedding\",\"data_type\":\"FLOAT32\",\"shape\":[3],"
            "\"data\":[0.5,0.0001,-2]}]");
    /* No vectors at all is an empty output, not an error. */
    post_ok(POST("openai.embedding"), NULL, "{\"data\":[]}", 0, "[]");
}

static void postprocess_cohere_v1_embedding(void **state)
{
    (void)state;
    post_ok(POST("cohere.embedding"), NULL,
            "{\"id\":\"b1e2\",\"texts\":[\"hello\",\"world\"],\"embeddings\":[[0.016296387,"
            "-0.008354187],[-0.02935791,0.010437012]],\"meta\":{\"api_version\":{\"version\":"
            "\"1\"}},\"response_type\":\"embeddings_floats\"}",
            2,
            "[{\"name\":\"sentence_embedding\",\"data_type\":\"FLOAT32\",\"shape\":[2],"
            "\"data\":[0.016296387,-0.008354187]},{\"name\":\"sentence_embedding\","
            "\"data_type\":\"FLOAT32\",\"shape\":[2],\"data\":[-0.02935791,0.010437012]}]");
}

static void postprocess_cohere_v2_embedding(void **state)
{
    (void)state;
    const char *resp = "{\"id\":\"x\",\"embeddings\":{\"float\":[[0.25,-0.5]],\"int8\":[[-12,"
                       "127,0]],\"uint8\":[[3,255]],\"binary\":[[-55]],\"ubinary\":[[201,7]]},"
                       "\"texts\":[\"hi\"],\"meta\":{}}";
    post_ok(POST("cohere_v2.embedding.float"), NULL, resp, 1,
            "[{\"name\":\"sentence_embedding\",\"data_type\":\"FLOAT32\",\"shape\":[2],"
            "\"data\":[0.25,-0.5]}]");
    post_ok(POST("cohere_v2.embedding.int8"), NULL, resp, 1,
            "[{\"name\":\"sentence_embedding\",\"data_type\":\"INT8\",\"shape\":[3],"
            "\"data\":[-12,127,0]}]");
    post_ok(POST("cohere_v2.embedding.uint8"), NULL, resp, 1,
            "[{\"name\":\"sentence_embedding\",\"data_type\":\"UINT8\",\"shape\":[2],"
            "\"data\":[3,255]}]");
    post_ok(POST("cohere_v2.embedding.binary"), NULL, resp, 1,
            "[{\"name\":\"sentence_embedding\",\"data_type\":\"BINARY\",\"shape\":[1],"
            "\"data\":[-55]}]");
    post_ok(POST("cohere_v2.embedding.ubinary"), NULL, resp, 1,
            "[{\"name\":\"sentence_embedding\",\"data_type\":\"UBINARY\",\"shape\":[2],"
            "\"data\":[201,7]}]");
    /* The v2 shape through the v1 function is ML Commons' validation error. */
    post_err(POST("cohere.embedding"), NULL, resp, 1, 400,
             "Post process function input is not a List.");
}

static void postprocess_bedrock_embedding(void **state)
{
    (void)state;
    post_ok(POST("bedrock.embedding"), NULL,
            "{\"embedding\":[0.123,-0.456,7.0E-5],\"inputTextTokenCount\":3}", 1,
            "[{\"name\":\"sentence_embedding\",\"data_type\":\"FLOAT32\",\"shape\":[3],"
            "\"data\":[0.123,-0.456,7e-5]}]");
    post_ok(POST("bedrock.embedding"), NULL, "{\"embedding\":[]}", 1,
            "[{\"name\":\"sentence_embedding\",\"data_type\":\"FLOAT32\",\"shape\":[0],"
            "\"data\":[]}]");
    /* Cohere on Bedrock answers {"embeddings": [[...]]}: the list function with a filter. */
    post_ok(POST("cohere.embedding"), NULL,
            "{\"embeddings\":[[0.1,0.2]],\"id\":\"a\",\"response_type\":\"embeddings_floats\","
            "\"texts\":[\"x\"]}",
            1,
            "[{\"name\":\"sentence_embedding\",\"data_type\":\"FLOAT32\",\"shape\":[2],"
            "\"data\":[0.1,0.2]}]");
}

static void postprocess_default_embedding(void **state)
{
    (void)state;
    post_ok(POST("default.embedding"), NULL, "[[0.1,0.2,0.3],[0.4,0.5,0.6]]", 2,
            "[{\"name\":\"sentence_embedding\",\"data_type\":\"FLOAT32\",\"shape\":[3],"
            "\"data\":[0.1,0.2,0.3]},{\"name\":\"sentence_embedding\",\"data_type\":"
            "\"FLOAT32\",\"shape\":[3],\"data\":[0.4,0.5,0.6]}]");
    /* $[*] also lists an object's values, as in Jayway. */
    post_ok(POST("default.embedding"), NULL, "{\"a\":[0.5]}", 1,
            "[{\"name\":\"sentence_embedding\",\"data_type\":\"FLOAT32\",\"shape\":[1],"
            "\"data\":[0.5]}]");
    post_err(POST("default.embedding"), NULL, "[0.1,0.2]", 1, 400,
             "The embedding should be a non-empty List containing List of Float values.");
}

static void postprocess_embedding_filters(void **state)
{
    (void)state;
    const char *resp = "{\"result\":{\"vectors\":[[1.5,2.5]],\"Int8\":[[1,2]]}}";
    post_ok(POST("cohere.embedding"), "$.result.vectors", resp, 1,
            "[{\"name\":\"sentence_embedding\",\"data_type\":\"FLOAT32\",\"shape\":[2],"
            "\"data\":[1.5,2.5]}]");
    /* The data type comes from the filter, case-insensitively, as in ML Commons. */
    post_ok(POST("default.embedding"), "$.result.Int8", resp, 1,
            "[{\"name\":\"sentence_embedding\",\"data_type\":\"INT8\",\"shape\":[2],"
            "\"data\":[1,2]}]");
    post_ok(POST("bedrock.embedding"), "$.result.vectors[0]", resp, 1,
            "[{\"name\":\"sentence_embedding\",\"data_type\":\"FLOAT32\",\"shape\":[2],"
            "\"data\":[1.5,2.5]}]");
    /* A blank filter is no filter. */
    post_ok(POST("bedrock.embedding"), "  ", "{\"embedding\":[1.25]}", 1,
            "[{\"name\":\"sentence_embedding\",\"data_type\":\"FLOAT32\",\"shape\":[1],"
            "\"data\":[1.25]}]");
    post_err(POST("bedrock.embedding"), "$[", "{\"embedding\":[1.25]}", 1, 400,
             "Invalid JSONPath [$[]: unexpected character at position 2");
}

static void postprocess_embedding_errors(void **state)
{
    (void)state;
    post_err(POST("cohere.embedding"), NULL, "{\"embeddings\":{\"float\":[[0.1]]}}", 1, 400,
             "Post process function input is not a List.");
    post_err(POST("cohere.embedding"), NULL, "{\"embeddings\":[0.1,0.2]}", 1, 400,
             "The embedding should be a non-empty List containing List of Float values.");
    post_err(POST("cohere.embedding"), NULL, "{\"embeddings\":[[]]}", 1, 400,
             "The embedding should be a non-empty List containing Float values.");
    post_err(POST("cohere.embedding"), NULL, "{\"embeddings\":[[\"0.1\"]]}", 1, 400,
             "The embedding should be a non-empty List containing Float values.");
    post_err(POST("cohere.embedding"), NULL, "{\"embeddings\":null}", 1, 400,
             "Can't run post process function as model output is null");
    post_err(POST("bedrock.embedding"), NULL, "{\"embedding\":[\"x\"]}", 1, 400,
             "The embedding should be a non-empty List containing Float values.");
    post_err(POST("bedrock.embedding"), NULL, "{\"embedding\":{\"a\":1}}", 1, 400,
             "Post process function input is not a List.");
    /* Past what ML Commons validates: its generic 500. */
    post_err(POST("cohere.embedding"), NULL, "{\"embeddings\":[[0.1,\"x\"]]}", 1, 500, EXEC_FAILED);
    post_err(POST("cohere.embedding"), NULL, "{\"embeddings\":[[0.1],7]}", 1, 500, EXEC_FAILED);
    post_err(POST("bedrock.embedding"), NULL, "{\"embedding\":[0.1,true]}", 1, 500, EXEC_FAILED);
    /* The data is not where the function looks (an error body with a 200, say). */
    post_err(POST("openai.embedding"), NULL, "{\"error\":{\"message\":\"x\"}}", 1, 500,
             EXEC_FAILED);
    post_err(POST("bedrock.embedding"), NULL, "\"plain text\"", 1, 500, EXEC_FAILED);
    post_err(POST("cohere_v2.embedding.int8"), NULL, "{\"embeddings\":{\"float\":[[1.0]]}}", 1, 500,
             EXEC_FAILED);
}

/* ------------------------------------------------------------------------------------------ */
/* Post-process: rerank                                                                       */
/* ------------------------------------------------------------------------------------------ */

static void postprocess_cohere_rerank(void **state)
{
    (void)state;
    const char *want = "[{\"name\":\"similarity\",\"data_type\":\"FLOAT32\",\"shape\":[1],"
                       "\"data\":[0.1]},{\"name\":\"similarity\",\"data_type\":\"FLOAT32\","
                       "\"shape\":[1],\"data\":[0.9]}]";
    post_ok(POST("cohere.rerank"), NULL,
            "{\"id\":\"r1\",\"results\":[{\"index\":1,\"relevance_score\":0.9},{\"index\":0,"
            "\"relevance_score\":0.1}],\"meta\":{\"api_version\":{\"version\":\"2\"}}}",
            2, want);
    post_ok(POST("cohere.rerank"), NULL,
            "{\"results\":[{\"index\":1,\"relevance_score\":0.9},{\"index\":0,"
            "\"relevance_score\":0.1}]}",
            0, want); /* ndocs 0: as many as results */
    post_ok(POST("default.rerank"), NULL,
            "[{\"index\":1,\"relevance_score\":0.9},{\"index\":0,\"relevance_score\":0.1}]", 2,
            want);
    post_ok(POST("cohere.rerank"), NULL, "{\"results\":[]}", 2, "[]");
}

static void postprocess_bedrock_rerank(void **state)
{
    (void)state;
    post_ok(POST("bedrock.rerank"), NULL,
            "{\"results\":[{\"index\":0,\"relevanceScore\":0.5}],\"nextToken\":null}", 1,
            "[{\"name\":\"similarity\",\"data_type\":\"FLOAT32\",\"shape\":[1],"
            "\"data\":[0.5]}]");
    /* Fewer results than docs (top_n overridden): the doc without a score gets null. */
    post_ok(POST("bedrock.rerank"), NULL,
            "{\"results\":[{\"index\":1,\"relevanceScore\":0.00012345678901234567}]}", 2,
            "[{\"name\":\"similarity\",\"data_type\":\"FLOAT32\",\"shape\":[1],\"data\":[null]},"
            "{\"name\":\"similarity\",\"data_type\":\"FLOAT32\",\"shape\":[1],"
            "\"data\":[0.00012345678901234567]}]");
}

static void postprocess_rerank_errors(void **state)
{
    (void)state;
    post_err(POST("cohere.rerank"), NULL, "{\"results\":{\"index\":0}}", 1, 400,
             "Post process function input is not a List.");
    post_err(POST("cohere.rerank"), NULL, "{\"results\":[1,2]}", 2, 400,
             "Post process function input is not a List of Map.");
    post_err(POST("cohere.rerank"), NULL, "{\"results\":[{\"index\":0,\"score\":0.3}]}", 1, 400,
             "The rerank result should contain index and relevance_score.");
    post_err(POST("bedrock.rerank"), NULL, "{\"results\":[{\"index\":0,\"relevance_score\":0.3}]}",
             1, 400, "The rerank result should contain index and relevanceScore.");
    post_err(POST("cohere.rerank"), NULL, "{\"results\":null}", 1, 400,
             "Can't run post process function as model output is null");
    /* Index out of range, not an int, a later result malformed, a score not a number. */
    post_err(POST("cohere.rerank"), NULL, "{\"results\":[{\"index\":2,\"relevance_score\":0.3}]}",
             2, 500, EXEC_FAILED);
    post_err(POST("cohere.rerank"), NULL, "{\"results\":[{\"index\":-1,\"relevance_score\":0.3}]}",
             2, 500, EXEC_FAILED);
    post_err(POST("cohere.rerank"), NULL, "{\"results\":[{\"index\":0.0,\"relevance_score\":0.3}]}",
             2, 500, EXEC_FAILED);
    post_err(POST("cohere.rerank"), NULL,
             "{\"results\":[{\"index\":0,\"relevance_score\":0.3},{\"index\":1}]}", 2, 500,
             EXEC_FAILED);
    post_err(POST("cohere.rerank"), NULL,
             "{\"results\":[{\"index\":0,\"relevance_score\":\"high\"}]}", 1, 500, EXEC_FAILED);
    post_err(POST("cohere.rerank"), NULL, "{\"message\":\"invalid api token\"}", 1, 500,
             EXEC_FAILED);
}

/* ------------------------------------------------------------------------------------------ */
/* Post-process: the default "response" tensor                                               */
/* ------------------------------------------------------------------------------------------ */

static const char *const chat =
    "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,"
    "\"message\":{\"role\":\"assistant\",\"content\":\"Hello!\"},\"finish_reason\":\"stop\"}],"
    "\"usage\":{\"total_tokens\":9}}";

static void postprocess_default_shapes(void **state)
{
    (void)state;
    char want[1024];
    snprintf(want, sizeof(want), "[{\"name\":\"response\",\"dataAsMap\":%s}]", chat);
    post_ok(NULL, NULL, chat, 0, want);
    post_ok(NULL, NULL, "[1,\"two\",{\"3\":3}]", 0,
            "[{\"name\":\"response\",\"dataAsMap\":{\"response\":[1,\"two\",{\"3\":3}]}}]");
    post_ok(NULL, NULL, "42", 0, "[{\"name\":\"response\",\"dataAsMap\":{\"response\":42}}]");
    post_ok(NULL, NULL, "true", 0, "[{\"name\":\"response\",\"dataAsMap\":{\"response\":true}}]");
    post_ok(NULL, NULL, "null", 0, "[{\"name\":\"response\",\"dataAsMap\":{\"response\":null}}]");
    post_ok(NULL, NULL, "{}", 0, "[{\"name\":\"response\",\"dataAsMap\":{}}]");
}

static void postprocess_default_text(void **state)
{
    (void)state;
    /* A body that is not JSON arrives as a JSON string. */
    struct workers_error e;
    struct json_object *r = json_object_new_string("plain text, \"quoted\"\n"), *out = NULL;
    assert_int_equal(workers_postprocess(NULL, NULL, r, 0, &out, &e), MLR_OK);
    json_object_put(r);
    assert_json(out, "[{\"name\":\"response\",\"dataAsMap\":{\"response\":\"plain text, "
                     "\\\"quoted\\\"\\n\"}}]");
    json_object_put(out);
    r = json_object_new_string("{not json");
    assert_int_equal(workers_postprocess(NULL, NULL, r, 0, &out, &e), MLR_OK);
    json_object_put(r);
    assert_json(out, "[{\"name\":\"response\",\"dataAsMap\":{\"response\":\"{not json\"}}]");
    json_object_put(out);
    /* A string holding a JSON object is that object; one holding an array is wrapped. */
    post_ok(NULL, NULL, "\" {\\\"a\\\":[1,2]} \\n\"", 0,
            "[{\"name\":\"response\",\"dataAsMap\":{\"a\":[1,2]}}]");
    post_ok(NULL, NULL, "\"[1,2]\"", 0,
            "[{\"name\":\"response\",\"dataAsMap\":{\"response\":[1,2]}}]");
    post_ok(NULL, NULL, "\"{\\\"a\\\":1} trailing\"", 0,
            "[{\"name\":\"response\",\"dataAsMap\":{\"response\":\"{\\\"a\\\":1} trailing\"}}]");
    post_ok(NULL, NULL, "\"42\"", 0,
            "[{\"name\":\"response\",\"dataAsMap\":{\"response\":\"42\"}}]");
}

static void postprocess_default_filter(void **state)
{
    (void)state;
    post_ok(NULL, "$.choices[0].message.content", chat, 0,
            "[{\"name\":\"response\",\"dataAsMap\":{\"response\":\"Hello!\"}}]");
    post_ok(NULL, "$.choices[0].message", chat, 0,
            "[{\"name\":\"response\",\"dataAsMap\":{\"role\":\"assistant\",\"content\":"
            "\"Hello!\"}}]");
    post_ok(NULL, "$.choices[*].message.content", chat, 0,
            "[{\"name\":\"response\",\"dataAsMap\":{\"response\":[\"Hello!\"]}}]");
    post_ok(NULL, "$.usage.total_tokens", chat, 0,
            "[{\"name\":\"response\",\"dataAsMap\":{\"response\":9}}]");
    /* The model answered JSON inside its text: the filtered string is parsed. */
    post_ok(NULL, "$.choices[0].message.content",
            "{\"choices\":[{\"message\":{\"content\":\"{\\\"label\\\":\\\"positive\\\"}\"}}]}", 0,
            "[{\"name\":\"response\",\"dataAsMap\":{\"label\":\"positive\"}}]");
    /* A filter that names nothing gives the whole response (ML Commons 3.x). */
    char want[1024];
    snprintf(want, sizeof(want), "[{\"name\":\"response\",\"dataAsMap\":%s}]", chat);
    post_ok(NULL, "$.output.text", chat, 0, want);
    post_ok(NULL, "", chat, 0, want);
    post_err(NULL, "$..content", chat, 0, 400,
             "Invalid JSONPath [$..content]: deep scan (..) is not supported at position 2");
}

static void postprocess_unknown_function(void **state)
{
    (void)state;
    post_err(POST("bedrock_v2.embedding.float"), NULL, "{}", 1, 400,
             "Unsupported post_process_function [connector.post_process.bedrock_v2.embedding."
             "float]: mlrelay runs only the built-in connector functions (Painless scripts are "
             "not supported)");
}

/* Doubles come out in their shortest round-trip form, whatever text they arrived in. */
static void postprocess_number_roundtrip(void **state)
{
    (void)state;
    post_ok(POST("bedrock.embedding"), NULL,
            "{\"embedding\":[-0.0043460787,-0.029653417,1e-5,1.0E-4,0.1,3.0,-0.0,1.5e300,"
            "123456789.125,0.30000000000000004,2.2250738585072014E-308,7,-0,"
            "0.10000000000000000555]}",
            1,
            "[{\"name\":\"sentence_embedding\",\"data_type\":\"FLOAT32\",\"shape\":[14],"
            "\"data\":[-0.0043460787,-0.029653417,1e-5,0.0001,0.1,3.0,-0.0,1.5e300,"
            "123456789.125,0.30000000000000004,2.2250738585072014e-308,7,0,0.1]}]");
    /* Values built in code (no source text) too; and each text reads back exactly. */
    static const double values[] = {-0.0043460787,          0.1,      1.0 / 3.0, 5e-324,
                                    1.7976931348623157e308, -123.456, 1e21,      100.0};
    struct json_object *vec = json_object_new_array(), *resp = json_object_new_object();
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++)
        json_object_array_add(vec, json_object_new_double(values[i]));
    json_object_object_add(resp, "embedding", vec); /* consumes vec */
    struct workers_error e;
    struct json_object *out = NULL;
    assert_int_equal(workers_postprocess(POST("bedrock.embedding"), NULL, resp, 1, &out, &e),
                     MLR_OK);
    struct json_object *data = NULL;
    assert_true(json_object_object_get_ex(json_object_array_get_idx(out, 0), "data", &data));
    assert_json(data, "[-0.0043460787,0.1,0.3333333333333333,5e-324,1.7976931348623157e308,"
                      "-123.456,1e21,100.0]");
    struct json_object *back = parse(json_object_to_json_string_ext(data, JSON_TEXT));
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++)
        assert_true(json_object_get_double(json_object_array_get_idx(back, i)) == values[i]);
    json_object_put(back);
    json_object_put(out);
    json_object_put(resp);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(jsonpath_root),
        cmocka_unit_test(jsonpath_fields),
        cmocka_unit_test(jsonpath_indexes),
        cmocka_unit_test(jsonpath_wildcards),
        cmocka_unit_test(jsonpath_null_values),
        cmocka_unit_test(jsonpath_syntax_errors),
        cmocka_unit_test(jsonpath_limits),
        cmocka_unit_test(preprocess_openai_default_cohere),
        cmocka_unit_test(preprocess_escaping_and_utf8),
        cmocka_unit_test(preprocess_bedrock_per_doc),
        cmocka_unit_test(preprocess_rerank),
        cmocka_unit_test(preprocess_bedrock_rerank),
        cmocka_unit_test(preprocess_step_splitting),
        cmocka_unit_test(preprocess_step_invalid),
        cmocka_unit_test(preprocess_errors),
        cmocka_unit_test(function_tables_match_connector),
        cmocka_unit_test(postprocess_openai_embedding),
        cmocka_unit_test(postprocess_cohere_v1_embedding),
        cmocka_unit_test(postprocess_cohere_v2_embedding),
        cmocka_unit_test(postprocess_bedrock_embedding),
        cmocka_unit_test(postprocess_default_embedding),
        cmocka_unit_test(postprocess_embedding_filters),
        cmocka_unit_test(postprocess_embedding_errors),
        cmocka_unit_test(postprocess_cohere_rerank),
        cmocka_unit_test(postprocess_bedrock_rerank),
        cmocka_unit_test(postprocess_rerank_errors),
        cmocka_unit_test(postprocess_default_shapes),
        cmocka_unit_test(postprocess_default_text),
        cmocka_unit_test(postprocess_default_filter),
        cmocka_unit_test(postprocess_unknown_function),
        cmocka_unit_test(postprocess_number_roundtrip),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
