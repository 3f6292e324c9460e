/*
 * test_template.c — unit tests of workers/template.c: the parameter map (merge order, conversion
 * and escaping by original JSON type, no_escape_params, recursion through connector values only),
 * placeholder substitution (defaults, quoted null, .toString(), $$ escape, credentials), the caps
 * (cycles, depth, size), and the body and header checks. The first case is the worked example of
 * reference §5.3; clients.md §4 item 33 is unfilled_placeholder_is_refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "workers.h"

static struct json_object *parse(const char *text)
{
    struct json_object *o = json_tokener_parse(text);
    assert_non_null(o);
    return o;
}

/* One merge (+ render when tmpl is set) from JSON texts; NULL texts mean "none". */
struct run {
    struct json_object *params; /* the merged map, NULL when the merge failed */
    char *out;                  /* the rendered text, NULL unless rendered */
    struct workers_error e;
    int rc;
};

static void run(struct run *r, const char *conn, const char *req, const char *pre, const char *tmpl,
                const char *cred)
{
    memset(r, 0, sizeof(*r));
    struct json_object *c = conn ? parse(conn) : NULL;
    struct json_object *q = req ? parse(req) : NULL;
    struct json_object *p = pre ? parse(pre) : NULL;
    struct json_object *k = cred ? parse(cred) : NULL;
    r->rc = workers_params_merge(c, q, p, &r->params, &r->e);
    if (r->rc == MLR_OK && tmpl != NULL)
        r->rc = workers_template_render(tmpl, r->params, k, &r->out, &r->e);
    json_object_put(c);
    json_object_put(q);
    json_object_put(p);
    json_object_put(k);
}

static void run_free(struct run *r)
{
    json_object_put(r->params);
    free(r->out);
}

/* Merges and renders, expecting success and exactly @want. */
static void expect(const char *conn, const char *req, const char *tmpl, const char *cred,
                   const char *want)
{
    struct run r;
    run(&r, conn, req, NULL, tmpl, cred);
    if (r.rc != MLR_OK)
        fail_msg("unexpected error: %s", r.e.reason);
    assert_string_equal(r.out, want);
    run_free(&r);
}

/* Expects a 400 illegal_argument_exception with exactly @reason. */
static void expect_400(int rc, const struct workers_error *e, const char *reason)
{
    assert_int_equal(rc, MLR_EINVAL);
    assert_int_equal(e->status, 400);
    assert_string_equal(e->type, "illegal_argument_exception");
    assert_string_equal(e->reason, reason);
}

/* The string value of @key in the merged map (NULL for JSON null; fails when absent). */
static const char *mapped(struct json_object *params, const char *key)
{
    struct json_object *v = NULL;
    assert_true(json_object_object_get_ex(params, key, &v));
    if (v == NULL)
        return NULL;
    assert_true(json_object_is_type(v, json_type_string));
    return json_object_get_string(v);
}

static void worked_example_of_reference(void **state)
{
    UNUSED(state);
    struct run r;
    run(&r, "{\"model\":\"gpt-4o\",\"max_tokens\":100}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"Say "
        "\\\"hi\\\"\"}],\"model\":\"gpt-4o-mini\"}",
        NULL,
        "{\"model\":\"${parameters.model}\",\"messages\":${parameters.messages},"
        "\"max_tokens\":${parameters.max_tokens}}",
        NULL);
    assert_int_equal(r.rc, MLR_OK);
    assert_string_equal(r.out, "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\","
                               "\"content\":\"Say \\\"hi\\\"\"}],\"max_tokens\":100}");
    assert_int_equal(workers_body_check(r.out, r.params, &r.e), MLR_OK);
    run_free(&r);
}

static void unfilled_placeholder_is_refused(void **state)
{
    UNUSED(state);
    const char *tmpl = "{\"prompt\":\"${parameters.prompt}\"}";
    struct run r;
    run(&r, "{\"skip_validating_missing_parameters\":\"false\"}",
        "{\"prompt\":\"Say this is a ${parameters.test}\"}", NULL, tmpl, NULL);
    assert_int_equal(r.rc, MLR_OK);
    assert_string_equal(r.out, "{\"prompt\":\"Say this is a ${parameters.test}\"}");
    expect_400(workers_body_check(r.out, r.params, &r.e), &r.e,
               "Some parameter placeholder not filled in payload: test");
    run_free(&r);

    run(&r, NULL, "{\"prompt\":\"Say this is a ${parameters.test}\"}", NULL, tmpl, NULL);
    expect_400(workers_body_check(r.out, r.params, &r.e), &r.e,
               "Some parameter placeholder not filled in payload: test");
    run_free(&r);
}

static void skip_validating_missing_parameters_passes_literally(void **state)
{
    UNUSED(state);
    const char *tmpl = "{\"prompt\":\"${parameters.prompt}\"}";
    struct run r;
    run(&r, "{\"skip_validating_missing_parameters\":\"true\"}",
        "{\"prompt\":\"Say this is a ${parameters.test}\"}", NULL, tmpl, NULL);
    assert_int_equal(r.rc, MLR_OK);
    assert_string_equal(r.out, "{\"prompt\":\"Say this is a ${parameters.test}\"}");
    assert_int_equal(workers_body_check(r.out, r.params, &r.e), MLR_OK);
    run_free(&r);

    /* From the request too, as a boolean (converted to "true"). */
    run(&r, NULL, "{\"skip_validating_missing_parameters\":true}", NULL,
        "{\"a\":\"${parameters.a}\"}", NULL);
    assert_string_equal(mapped(r.params, "skip_validating_missing_parameters"), "true");
    assert_int_equal(workers_body_check(r.out, r.params, &r.e), MLR_OK);
    run_free(&r);
}

static void leftover_names_in_order_once(void **state)
{
    UNUSED(state);
    struct workers_error e;
    const char *body =
        "{\"a\":\"${parameters.b}\",\"c\":\"${parameters.a}\",\"d\":\"${parameters.b}"
        "\",\"e\":\"${parameters.x.y}\"}";
    expect_400(workers_body_check(body, NULL, &e), &e,
               "Some parameter placeholder not filled in payload: b, a, x.y");
}

static void invalid_payload_quotes_the_body(void **state)
{
    UNUSED(state);
    /* A string where the template expects an array: escaped text, so the JSON breaks. */
    struct run r;
    run(&r, NULL, "{\"messages\":\"hi\"}", NULL, "{\"messages\":${parameters.messages}}", NULL);
    assert_int_equal(r.rc, MLR_OK);
    expect_400(workers_body_check(r.out, r.params, &r.e), &r.e,
               "Invalid payload: {\"messages\":hi}");
    run_free(&r);
}

static void ndjson_and_top_level_values(void **state)
{
    UNUSED(state);
    struct workers_error e;
    assert_int_equal(workers_body_check("{\"index\":{}}\n{\"a\":1}\n", NULL, &e), MLR_OK);
    assert_int_equal(workers_body_check("{\"a\":1}\r\n\r\n[2]\r\n", NULL, &e), MLR_OK);
    assert_int_equal(workers_body_check("  [1, {\"b\":null}]  ", NULL, &e), MLR_OK);
    expect_400(workers_body_check("{\"a\":1}\nnot json", NULL, &e), &e,
               "Invalid payload: {\"a\":1}\nnot json");
    expect_400(workers_body_check("123", NULL, &e), &e, "Invalid payload: 123");
    expect_400(workers_body_check("\"text\"", NULL, &e), &e, "Invalid payload: \"text\"");
    expect_400(workers_body_check("", NULL, &e), &e, "Invalid payload: ");
    expect_400(workers_body_check(" \n \n", NULL, &e), &e, "Invalid payload:  \n \n");
    expect_400(workers_body_check("{\"a\":1,}", NULL, &e), &e, "Invalid payload: {\"a\":1,}");
    expect_400(workers_body_check("{\"a\":\"\xC3\x28\"}", NULL, &e), &e,
               "Invalid payload: {\"a\":\"\xC3\x28\"}");
}

static void request_strings_are_escaped(void **state)
{
    UNUSED(state);
    expect(NULL, "{\"p\":\"a\\\"b\\\\c/d\\b\\f\\n\\r\\t\\u0001\\u001f\\u007f\\u0000e\"}",
           "${parameters.p}", NULL, "a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u0001\\u001F\x7f\\u0000e");
    /* Hostile quoting stays inside the string: the body keeps its shape. */
    struct run r;
    run(&r, NULL, "{\"p\":\"x\\\", \\\"admin\\\": true, \\\"y\\\": \\\"\"}", NULL,
        "{\"prompt\":\"${parameters.p}\"}", NULL);
    assert_int_equal(r.rc, MLR_OK);
    assert_int_equal(workers_body_check(r.out, r.params, &r.e), MLR_OK);
    struct json_object *body = parse(r.out);
    assert_int_equal(json_object_object_length(body), 1);
    struct json_object *prompt = json_object_object_get(body, "prompt");
    assert_string_equal(json_object_get_string(prompt), "x\", \"admin\": true, \"y\": \"");
    json_object_put(body);
    run_free(&r);
}

static void utf8_becomes_u_escapes(void **state)
{
    UNUSED(state);
    const char *orig = "caf\xC3\xA9 \xE4\xB8\xAD \xF0\x9F\x98\x80!";
    expect(NULL, "{\"p\":\"caf\xC3\xA9 \xE4\xB8\xAD \xF0\x9F\x98\x80!\"}", "${parameters.p}", NULL,
           "caf\\u00E9 \\u4E2D \\uD83D\\uDE00!");
    /* The escaped form decodes back to the original text. */
    struct run r;
    run(&r, NULL, "{\"p\":\"caf\\u00e9 \\u4e2d \\ud83d\\ude00!\"}", NULL,
        "{\"p\":\"${parameters.p}\"}", NULL);
    assert_int_equal(r.rc, MLR_OK);
    struct json_object *body = parse(r.out);
    assert_string_equal(json_object_get_string(json_object_object_get(body, "p")), orig);
    json_object_put(body);
    run_free(&r);
}

static void invalid_utf8_is_refused(void **state)
{
    UNUSED(state);
    static const char *const bad[] = {
        "\xC3\x28",         /* bad continuation */
        "\xC0\xAF",         /* overlong '/' */
        "\xE0\x80\xAF",     /* overlong, three bytes */
        "\xED\xA0\x80",     /* a surrogate */
        "\xF4\x90\x80\x80", /* above U+10FFFF */
        "ok\xE2\x82",       /* truncated */
        "\x80",             /* lone continuation */
        "\xFF",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct json_object *req = json_object_new_object();
        json_object_object_add(req, "p", json_object_new_string(bad[i]));
        struct json_object *out = (struct json_object *)&out; /* sentinel: must stay */
        struct workers_error e;
        expect_400(workers_params_merge(NULL, req, NULL, &out, &e), &e,
                   "Parameter [p] is not valid UTF-8");
        assert_ptr_equal(out, (struct json_object *)&out);
        json_object_put(req);
    }
}

static void json_looking_string_is_escaped(void **state)
{
    UNUSED(state);
    /* Pain point 17: a STRING that looks like JSON is still a string. */
    struct run r;
    run(&r, NULL, "{\"s\":\"{\\\"a\\\":1}\",\"t\":\"[\\\"x\\\"]\",\"o\":{\"a\":1},\"l\":[\"x\"]}",
        NULL,
        "{\"s\":\"${parameters.s}\",\"t\":\"${parameters.t}\",\"o\":${parameters.o},"
        "\"l\":${parameters.l}}",
        NULL);
    assert_int_equal(r.rc, MLR_OK);
    assert_string_equal(r.out, "{\"s\":\"{\\\"a\\\":1}\",\"t\":\"[\\\"x\\\"]\",\"o\":{\"a\":1},"
                               "\"l\":[\"x\"]}");
    assert_int_equal(workers_body_check(r.out, r.params, &r.e), MLR_OK);
    run_free(&r);
}

static void values_convert_by_json_type(void **state)
{
    UNUSED(state);
    struct run r;
    run(&r, NULL,
        "{\"i\":7,\"neg\":-3,\"d\":0.0001,\"h\":0.5,\"big\":1e7,\"t\":true,\"f\":false,"
        "\"o\":{\"k\":\"v/w\",\"n\":[1,2]},\"a\":[\"a\",\"\\u00e9\"],\"z\":null,\"e\":\"\"}",
        NULL, NULL, NULL);
    assert_int_equal(r.rc, MLR_OK);
    assert_string_equal(mapped(r.params, "i"), "7");
    assert_string_equal(mapped(r.params, "neg"), "-3");
    assert_string_equal(mapped(r.params, "d"), "1.0E-4");
    assert_string_equal(mapped(r.params, "h"), "0.5");
    assert_string_equal(mapped(r.params, "big"), "1.0E7");
    assert_string_equal(mapped(r.params, "t"), "true");
    assert_string_equal(mapped(r.params, "f"), "false");
    assert_string_equal(mapped(r.params, "o"), "{\"k\":\"v/w\",\"n\":[1,2]}");
    assert_string_equal(mapped(r.params, "a"), "[\"a\",\"\xC3\xA9\"]");
    assert_null(mapped(r.params, "z"));
    assert_string_equal(mapped(r.params, "e"), "");
    run_free(&r);

    /* Connector values are stored text: neither escaped nor converted again. */
    run(&r, "{\"c\":\"a\\\"b/\\u00e9\",\"n\":100}", NULL, NULL, NULL, NULL);
    assert_string_equal(mapped(r.params, "c"), "a\"b/\xC3\xA9");
    assert_string_equal(mapped(r.params, "n"), "100");
    run_free(&r);
}

static void request_null_masks_connector_value(void **state)
{
    UNUSED(state);
    const char *conn = "{\"x\":\"conn\"}", *req = "{\"x\":null}";
    expect(conn, req, "${parameters.x}", NULL, "${parameters.x}");
    expect(conn, req, "${parameters.x:-d}", NULL, "d");
    expect(conn, req, "{\"a\":\"${parameters.x:-null}\"}", NULL, "{\"a\":null}");
    expect(conn, NULL, "${parameters.x}", NULL, "conn");
}

static void request_values_are_never_expanded(void **state)
{
    UNUSED(state);
    struct run r;
    run(&r, "{\"secret\":\"s3cr3t\",\"prompt\":\"Q: ${parameters.q}\"}",
        "{\"q\":\"${parameters.secret}\",\"other\":\"${parameters.secret}\","
        "\"ts\":\"${parameters.secret.toString()}\"}",
        NULL,
        "{\"p\":\"${parameters.prompt}\",\"o\":\"${parameters.other}\",\"t\":\"${parameters.ts}\"}",
        NULL);
    assert_int_equal(r.rc, MLR_OK);
    assert_string_equal(r.out, "{\"p\":\"Q: ${parameters.secret}\",\"o\":\"${parameters.secret}\","
                               "\"t\":\"${parameters.secret.toString()}\"}");
    assert_null(strstr(r.out, "s3cr3t"));
    expect_400(workers_body_check(r.out, r.params, &r.e), &r.e,
               "Some parameter placeholder not filled in payload: secret, secret.toString()");
    run_free(&r);

    /* Nor does a request value reach the credentials of a header. */
    run(&r, NULL, "{\"v\":\"${credential.key}\"}", NULL, "x-${parameters.v}", "{\"key\":\"sk\"}");
    assert_int_equal(r.rc, MLR_OK);
    assert_string_equal(r.out, "x-${credential.key}");
    expect_400(workers_header_check("X-Custom", r.out, &r.e), &r.e,
               "Header 'X-Custom' contains unresolved placeholder. Required parameter is missing.");
    run_free(&r);

    /* Pre-process output is data too. */
    run(&r, "{\"model\":\"m\"}", NULL, "{\"x\":\"${parameters.model}\"}", "${parameters.x}", NULL);
    assert_string_equal(r.out, "${parameters.model}");
    run_free(&r);
}

static void connector_values_expand_recursively(void **state)
{
    UNUSED(state);
    const char *conn = "{\"prompt\":\"Human: ${parameters.question} (${parameters.style})\","
                       "\"style\":\"${parameters.tone} tone\",\"tone\":\"formal\","
                       "\"question\":\"default?\"}";
    const char *tmpl = "{\"prompt\":\"${parameters.prompt}\"}";
    expect(conn, NULL, tmpl, NULL, "{\"prompt\":\"Human: default? (formal tone)\"}");
    expect(conn, "{\"question\":\"Why \\\"x\\\"?\",\"tone\":\"casual\"}", tmpl, NULL,
           "{\"prompt\":\"Human: Why \\\"x\\\"? (casual tone)\"}");
    /* The merged map itself holds the final text. */
    struct run r;
    run(&r, conn, "{\"question\":\"q\"}", NULL, NULL, NULL);
    assert_string_equal(mapped(r.params, "prompt"), "Human: q (formal tone)");
    assert_string_equal(mapped(r.params, "style"), "formal tone");
    run_free(&r);
    /* A request value replaces a connector template wholesale. */
    expect(conn, "{\"prompt\":\"mine ${parameters.tone}\"}", tmpl, NULL,
           "{\"prompt\":\"mine ${parameters.tone}\"}");
}

static void preprocess_sits_between_connector_and_request(void **state)
{
    UNUSED(state);
    const char *conn = "{\"input\":\"conn\",\"model\":\"m\"}";
    const char *pre = "{\"input\":\"[\\\"a\\\",\\\"b\\\"]\"}";
    const char *tmpl = "{\"model\":\"${parameters.model}\",\"input\":${parameters.input}}";
    struct run r;
    run(&r, conn, NULL, pre, tmpl, NULL);
    assert_int_equal(r.rc, MLR_OK);
    assert_string_equal(r.out, "{\"model\":\"m\",\"input\":[\"a\",\"b\"]}");
    run_free(&r);
    run(&r, conn, "{\"input\":[\"req\"]}", pre, tmpl, NULL);
    assert_string_equal(r.out, "{\"model\":\"m\",\"input\":[\"req\"]}");
    run_free(&r);
}

static void cycles_are_refused(void **state)
{
    UNUSED(state);
    struct run r;
    run(&r, "{\"a\":\"${parameters.b}\",\"b\":\"${parameters.a}\"}", NULL, NULL, "x", NULL);
    expect_400(r.rc, &r.e, "Infinite loop in property interpolation of ${parameters.a}: a->b->a");
    assert_null(r.params);
    run_free(&r);
    run(&r, "{\"a\":\"x${parameters.a}\"}", NULL, NULL, NULL, NULL);
    expect_400(r.rc, &r.e, "Infinite loop in property interpolation of ${parameters.a}: a->a");
    run_free(&r);
    run(&r,
        "{\"s\":\"${parameters.a}\",\"a\":\"${parameters.b}\",\"b\":\"${parameters.c}\","
        "\"c\":\"<${parameters.a.toString()}>\"}",
        NULL, NULL, NULL, NULL);
    expect_400(r.rc, &r.e,
               "Infinite loop in property interpolation of ${parameters.a}: a->b->c->a");
    run_free(&r);
    /* A request value breaks the cycle: it is a leaf. */
    expect("{\"a\":\"${parameters.b}\",\"b\":\"${parameters.a}\"}", "{\"b\":\"x\"}",
           "${parameters.a}|${parameters.b}", NULL, "x|x");
}

/* A chain k<n> -> ... -> k1 -> k0 (plain), inserted top first so nothing is memoised early. */
static struct json_object *chain(int n)
{
    struct json_object *c = json_object_new_object();
    char key[16], val[32];
    for (int i = n; i >= 1; i--) {
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(val, sizeof(val), "${parameters.k%d}", i - 1);
        json_object_object_add(c, key, json_object_new_string(val));
    }
    json_object_object_add(c, "k0", json_object_new_string("end"));
    return c;
}

static void depth_is_capped(void **state)
{
    UNUSED(state);
    struct workers_error e;
    struct json_object *out = NULL;
    struct json_object *c = chain(WORKERS_TEMPLATE_MAX_DEPTH);
    assert_int_equal(workers_params_merge(c, NULL, NULL, &out, &e), MLR_OK);
    assert_string_equal(mapped(out, "k32"), "end");
    json_object_put(out);
    json_object_put(c);
    c = chain(WORKERS_TEMPLATE_MAX_DEPTH + 1);
    out = NULL;
    expect_400(workers_params_merge(c, NULL, NULL, &out, &e), &e,
               "Parameter substitution is nested more than 32 levels deep");
    assert_null(out);
    json_object_put(c);
}

static void merge_output_is_capped(void **state)
{
    UNUSED(state);
    /* Each level doubles the one below: 2+4+8+16 MiB > 16 MiB in all. */
    size_t mib = (size_t)1 << 20;
    char *big = malloc(mib + 1);
    memset(big, 'x', mib);
    big[mib] = '\0';
    struct json_object *c = json_object_new_object();
    json_object_object_add(c, "k0", json_object_new_string(big));
    char key[8], val[64];
    for (int i = 1; i <= 4; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(val, sizeof(val), "${parameters.k%d}${parameters.k%d}", i - 1, i - 1);
        json_object_object_add(c, key, json_object_new_string(val));
    }
    struct json_object *out = NULL;
    struct workers_error e;
    expect_400(workers_params_merge(c, NULL, NULL, &out, &e), &e,
               "Parameter substitution produced more than 16777216 bytes");
    assert_null(out);
    json_object_put(c);
    free(big);
}

/* A template of @n copies of ${parameters.big}. */
static char *copies(int n)
{
    const char *one = "${parameters.big}";
    char *t = calloc((size_t)n, strlen(one) + 1);
    for (int i = 0; i < n; i++)
        strcat(t, one);
    return t;
}

static void render_output_is_capped(void **state)
{
    UNUSED(state);
    size_t mib = (size_t)1 << 20;
    char *big = malloc(mib + 1);
    memset(big, 'a', mib);
    big[mib] = '\0';
    struct json_object *params = json_object_new_object();
    json_object_object_add(params, "big", json_object_new_string(big));
    struct workers_error e;
    char *out = NULL, *t = copies(16);
    assert_int_equal(workers_template_render(t, params, NULL, &out, &e), MLR_OK);
    assert_int_equal(strlen(out), 16 * mib);
    free(out);
    free(t);
    t = copies(17);
    out = NULL;
    expect_400(workers_template_render(t, params, NULL, &out, &e), &e,
               "Parameter substitution produced more than 16777216 bytes");
    assert_null(out);
    free(t);
    json_object_put(params);
    free(big);
}

static void dollar_escape(void **state)
{
    UNUSED(state);
    struct run r;
    run(&r, NULL, "{\"x\":\"v\"}", NULL,
        "{\"a\":\"$${parameters.x}\",\"b\":\"$${other}\",\"c\":\"$$${parameters.x}\","
        "\"d\":\"${parameters.x}\",\"e\":\"$$\"}",
        NULL);
    assert_int_equal(r.rc, MLR_OK);
    assert_string_equal(r.out, "{\"a\":\"${parameters.x}\",\"b\":\"$${other}\","
                               "\"c\":\"$${parameters.x}\",\"d\":\"v\",\"e\":\"$$\"}");
    /* The escaped placeholder is literal text, so the leftover check sees it (as ML Commons). */
    expect_400(workers_body_check(r.out, r.params, &r.e), &r.e,
               "Some parameter placeholder not filled in payload: x");
    run_free(&r);
    /* In a connector value too, and for credentials in header mode. */
    expect("{\"p\":\"$${parameters.x}\"}", "{\"x\":\"v\"}", "${parameters.p}", NULL,
           "${parameters.x}");
    expect(NULL, NULL, "$${credential.k}/${credential.k}", "{\"k\":\"K\"}", "${credential.k}/K");
}

static void defaults_and_dotted_names(void **state)
{
    UNUSED(state);
    expect(NULL, "{\"y\":\"Y\",\"a.b\":\"dotted\",\"e\":\"\"}",
           "${parameters.x:-fallback}|${parameters.y:-no}|${parameters.a.b}|"
           "${parameters.a.b:-no}|${parameters.x:-}|${parameters.x:-a:-b}|${parameters.e:-no}",
           NULL, "fallback|Y|dotted|dotted||a:-b|");
    /* A dot is part of the key: no traversal into objects. */
    expect(NULL, "{\"a\":{\"b\":1}}", "${parameters.a.b}", NULL, "${parameters.a.b}");
}

static void quoted_null_form(void **state)
{
    UNUSED(state);
    expect(NULL, "{\"y\":\"v\",\"n\":null,\"a.b\":\"w\"}",
           "{\"a\":\"${parameters.x:-null}\",\"b\":\"${parameters.y:-null}\","
           "\"c\":\"${parameters.c.d:-null}\",\"d\":\"${parameters.n:-null}\","
           "\"e\":\"${parameters.a.b:-null}\",\"f\":${parameters.x:-null}}",
           NULL, "{\"a\":null,\"b\":\"v\",\"c\":\"null\",\"d\":null,\"e\":\"w\",\"f\":null}");
}

static void to_string_in_templates_and_values(void **state)
{
    UNUSED(state);
    const char *req = "{\"context\":[{\"q\":\"a \\\"b\\\"\"}]}";
    const char *ctx = "[{\"q\":\"a \\\"b\\\"\"}]"; /* the map value of context */
    struct run r;
    /* Directly in a template (an mlrelay addition). */
    run(&r, NULL, req, NULL, "{\"prompt\":\"Context: ${parameters.context.toString()}\"}", NULL);
    assert_int_equal(r.rc, MLR_OK);
    assert_string_equal(r.out,
                        "{\"prompt\":\"Context: [{\\\"q\\\":\\\"a \\\\\\\"b\\\\\\\"\\\"}]\"}");
    assert_int_equal(workers_body_check(r.out, r.params, &r.e), MLR_OK);
    struct json_object *body = parse(r.out);
    const char *prompt = json_object_get_string(json_object_object_get(body, "prompt"));
    assert_string_equal(prompt + strlen("Context: "), ctx);
    json_object_put(body);
    run_free(&r);
    /* Inside a connector value, as ML Commons uses it. */
    expect("{\"prompt\":\"Context: ${parameters.context.toString()}\"}", req,
           "{\"p\":\"${parameters.prompt}\"}", NULL,
           "{\"p\":\"Context: [{\\\"q\\\":\\\"a \\\\\\\"b\\\\\\\"\\\"}]\"}");
    /* Absent stays literal; a literal key ending in .toString() is found when NAME is absent. */
    expect(NULL, "{\"k.toString()\":\"lit\"}",
           "${parameters.nope.toString()}|${parameters.k.toString()}", NULL,
           "${parameters.nope.toString()}|lit");
    /* Non-ASCII is escaped on the way. */
    expect(NULL, "{\"o\":{\"k\":\"\\u00e9\\n\"}}", "${parameters.o.toString()}", NULL,
           "{\\\"k\\\":\\\"\\u00E9\\\\n\\\"}");
}

static void credentials_only_in_header_mode(void **state)
{
    UNUSED(state);
    const char *cred = "{\"key\":\"sk-1\",\"k\":\"K\"}";
    expect(NULL, NULL, "Bearer ${credential.key}", cred, "Bearer sk-1");
    expect(NULL, NULL, "Bearer ${credential.key}", NULL, "Bearer ${credential.key}");
    expect(NULL, "{\"v\":\"1\"}", "${parameters.v}/${credential.k}/${credential.none}", cred,
           "1/K/${credential.none}");
    expect(NULL, NULL, "${credential.none:-dflt}", cred, "dflt");
    /* Connector parameter values never see credentials. */
    expect("{\"auth\":\"Bearer ${credential.key}\"}", NULL, "${parameters.auth}", cred,
           "Bearer ${credential.key}");

    struct run r;
    run(&r, NULL, NULL, NULL, "Bearer ${credential.missing}", cred);
    expect_400(workers_header_check("Authorization", r.out, &r.e), &r.e,
               "Header 'Authorization' contains unresolved placeholder. Required parameter is "
               "missing.");
    run_free(&r);
}

static void header_check_rules(void **state)
{
    UNUSED(state);
    struct workers_error e;
    assert_int_equal(workers_header_check("Content-Type", "application/json", &e), MLR_OK);
    assert_int_equal(workers_header_check("X-A", "tab\tinside", &e), MLR_OK);
    assert_int_equal(workers_header_check("X-A", "", &e), MLR_OK);
    expect_400(workers_header_check("X-A", "a\r\nInjected: 1", &e), &e,
               "Header value contains invalid control character");
    expect_400(workers_header_check("X-A", "del\x7f", &e), &e,
               "Header value contains invalid control character");
    expect_400(workers_header_check("X-A", "v=${parameters.v}", &e), &e,
               "Header 'X-A' contains unresolved placeholder. Required parameter is missing.");
    expect_400(workers_header_check("X A", "v", &e), &e,
               "Header name 'X A' is not a valid HTTP token");
    expect_400(workers_header_check("", "v", &e), &e, "Header name must not be empty");

    char value[WORKERS_HEADER_MAX_BYTES];
    memset(value, 'v', sizeof(value));
    value[WORKERS_HEADER_MAX_BYTES - 5] = '\0'; /* "X-Big" + 8187 = 8192: at the limit */
    assert_int_equal(workers_header_check("X-Big", value, &e), MLR_OK);
    value[WORKERS_HEADER_MAX_BYTES - 5] = 'v';
    value[WORKERS_HEADER_MAX_BYTES - 4] = '\0';
    expect_400(workers_header_check("X-Big", value, &e), &e,
               "Header 'X-Big' is too large: name and value take 8193 bytes, the limit is 8192");
}

static void no_escape_params(void **state)
{
    UNUSED(state);
    struct run r;
    run(&r, NULL,
        "{\"prompt\":\"say \\\"hi\\\"\",\"raw\":\"{\\\"a\\\":1}\",\"other\":\"a/b\","
        "\"no_escape_params\":\"raw , prompt\"}",
        NULL, NULL, NULL);
    assert_int_equal(r.rc, MLR_OK);
    assert_string_equal(mapped(r.params, "prompt"), "say \"hi\"");
    assert_string_equal(mapped(r.params, "raw"), "{\"a\":1}");
    assert_string_equal(mapped(r.params, "other"), "a\\/b");
    run_free(&r);
    /* From the connector; a request null switches it off. */
    run(&r, "{\"no_escape_params\":\"raw\"}", "{\"raw\":\"a/b\",\"other\":\"a/b\"}", NULL, NULL,
        NULL);
    assert_string_equal(mapped(r.params, "raw"), "a/b");
    assert_string_equal(mapped(r.params, "other"), "a\\/b");
    run_free(&r);
    run(&r, "{\"no_escape_params\":\"raw\"}", "{\"raw\":\"a/b\",\"no_escape_params\":null}", NULL,
        NULL, NULL);
    assert_string_equal(mapped(r.params, "raw"), "a\\/b");
    run_free(&r);
}

static void unterminated_and_unknown_placeholders_stay(void **state)
{
    UNUSED(state);
    expect(NULL, "{\"x\":\"v\"}", "a ${parameters.x ${parameters.x}", NULL,
           "a ${parameters.x ${parameters.x}");
    expect(NULL, "{\"x\":\"v\"}", "${parameters.unknown}|${other.x}|${x}|$|\"|${parameters.x}$",
           NULL, "${parameters.unknown}|${other.x}|${x}|$|\"|v$");
    expect(NULL, NULL, "", NULL, "");
}

static void outputs_untouched_on_failure(void **state)
{
    UNUSED(state);
    struct workers_error e;
    struct json_object *req = parse("[1]");
    struct json_object *params = (struct json_object *)&params;
    expect_400(workers_params_merge(NULL, req, NULL, &params, &e), &e,
               "parameters must be a JSON object");
    assert_ptr_equal(params, (struct json_object *)&params);
    json_object_put(req);

    struct json_object *map = json_object_new_object();
    json_object_object_add(map, "v", json_object_new_string_len("a\0b", 3));
    char *out = (char *)&out;
    expect_400(workers_template_render("${parameters.v}", map, NULL, &out, &e), &e,
               "The value of [v] contains a NUL character");
    assert_ptr_equal(out, (char *)&out);
    json_object_put(map);
}

static void nul_in_request_strings(void **state)
{
    UNUSED(state);
    /* Escaped, a NUL is harmless text; verbatim (no_escape_params), it is refused at render. */
    struct json_object *req = json_object_new_object();
    json_object_object_add(req, "e", json_object_new_string_len("a\0b", 3));
    json_object_object_add(req, "v", json_object_new_string_len("a\0b", 3));
    json_object_object_add(req, "no_escape_params", json_object_new_string("v"));
    struct json_object *params = NULL;
    struct workers_error e;
    char *out = NULL;
    assert_int_equal(workers_params_merge(NULL, req, NULL, &params, &e), MLR_OK);
    assert_int_equal(workers_template_render("${parameters.e}", params, NULL, &out, &e), MLR_OK);
    assert_string_equal(out, "a\\u0000b");
    free(out);
    expect_400(workers_template_render("${parameters.v}", params, NULL, &out, &e), &e,
               "The value of [v] contains a NUL character");
    json_object_put(params);
    json_object_put(req);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(worked_example_of_reference),
        cmocka_unit_test(unfilled_placeholder_is_refused),
        cmocka_unit_test(skip_validating_missing_parameters_passes_literally),
        cmocka_unit_test(leftover_names_in_order_once),
        cmocka_unit_test(invalid_payload_quotes_the_body),
        cmocka_unit_test(ndjson_and_top_level_values),
        cmocka_unit_test(request_strings_are_escaped),
        cmocka_unit_test(utf8_becomes_u_escapes),
        cmocka_unit_test(invalid_utf8_is_refused),
        cmocka_unit_test(json_looking_string_is_escaped),
        cmocka_unit_test(values_convert_by_json_type),
        cmocka_unit_test(request_null_masks_connector_value),
        cmocka_unit_test(request_values_are_never_expanded),
        cmocka_unit_test(connector_values_expand_recursively),
        cmocka_unit_test(preprocess_sits_between_connector_and_request),
        cmocka_unit_test(cycles_are_refused),
        cmocka_unit_test(depth_is_capped),
        cmocka_unit_test(merge_output_is_capped),
        cmocka_unit_test(render_output_is_capped),
        cmocka_unit_test(dollar_escape),
        cmocka_unit_test(defaults_and_dotted_names),
        cmocka_unit_test(quoted_null_form),
        cmocka_unit_test(to_string_in_templates_and_values),
        cmocka_unit_test(credentials_only_in_header_mode),
        cmocka_unit_test(header_check_rules),
        cmocka_unit_test(no_escape_params),
        cmocka_unit_test(unterminated_and_unknown_placeholders_stay),
        cmocka_unit_test(outputs_untouched_on_failure),
        cmocka_unit_test(nul_in_request_strings),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
