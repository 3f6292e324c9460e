/*
 * test_search.c — unit tests of store/search.c: the `_search` DSL subset compiled to SQL and run
 * over the real schema (every migration applied to an in-memory database).
 *
 * Each case gets a fresh database holding five models with varied documents (arrays, nested
 * objects, nulls, missing fields, credentials) and asserts the ids of the hits, in order, so
 * both matching and ordering are checked at once. Error cases assert the exact OpenSearch error
 * type and reason. The totals case inserts 10,050 tasks in one transaction.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const struct store__field model_fields[] = {
    {"_id", "id", 0},
    {"name", "name", 0},
    {"model_state", "model_state", 0},
    {"model_group_id", "model_group_id", 0},
    {"connector_id", "connector_id", 0},
    {"created_time", "created_time", 1},
    {"last_updated_time", "last_updated_time", 1},
};
static const struct store__index models_ix = {"models", ".plugins-ml-model", model_fields,
                                              N(model_fields), "rowid"};

static const struct store__field task_fields[] = {
    {"task_type", "task_type", 0},     {"state", "state", 0},
    {"model_id", "model_id", 0},       {"create_time", "create_time", 1},
    {"last_update_time", "last_update_time", 1},
};
static const struct store__index tasks_ix = {"tasks", ".plugins-ml-task", task_fields,
                                             N(task_fields), "create_time"};

struct fixture {
    struct store__conn conn; /* conn.db: in-memory database with the full schema */
};

static const struct {
    const char *id, *name, *state;
    int64_t created;
    const char *doc;
} models[] = {
    {"m1", "Bedrock Titan embedding", "DEPLOYED", 100,
     "{\"name\":\"Bedrock Titan embedding\",\"model_state\":\"DEPLOYED\","
     "\"description\":\"Titan text embeddings v2\",\"connector\":{\"protocol\":\"aws_sigv4\","
     "\"credential\":{\"access_key\":\"AKIA\"},\"parameters\":{\"region\":\"us-east-1\","
     "\"model\":\"titan\"}},\"tags\":[\"prod\",\"embed\"],\"rating\":5,\"is_hidden\":false}"},
    {"m2", "OpenAI chat", "REGISTERED", 200,
     "{\"name\":\"OpenAI chat\",\"model_state\":\"REGISTERED\",\"description\":\"GPT chat "
     "completion\",\"tags\":[\"dev\"],\"rating\":3,\"credential\":{\"openAI_key\":\"sk-x\"}}"},
    {"m3", "Cohere rerank", "DEPLOY_FAILED", 300,
     "{\"name\":\"Cohere rerank\",\"model_state\":\"DEPLOY_FAILED\",\"description\":null,"
     "\"tags\":[],\"rating\":4}"},
    {"m4", "OpenAI embedding", "DEPLOYED", 200,
     "{\"name\":\"OpenAI embedding\",\"model_state\":\"DEPLOYED\",\"description\":\"text "
     "embedding ada\",\"rating\":5}"},
    {"m5", "Titan", "UNDEPLOYED", 50, "{\"name\":\"Titan\",\"model_state\":\"UNDEPLOYED\"}"},
};

static void exec_ok(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
}

static void insert_models(sqlite3 *db)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO models(id, name, model_state, "
                                            "created_time, last_updated_time, version, seq_no, "
                                            "doc, credential) VALUES(?, ?, ?, ?, ?, ?, ?, ?, "
                                            "'{\"k\":\"secret\"}')",
                                        -1, &st, NULL),
                     SQLITE_OK);
    for (size_t i = 0; i < N(models); i++) {
        sqlite3_bind_text(st, 1, models[i].id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, models[i].name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, models[i].state, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, models[i].created);
        sqlite3_bind_int64(st, 5, models[i].created + 1);
        sqlite3_bind_int64(st, 6, (int64_t)i + 2);
        sqlite3_bind_int64(st, 7, (int64_t)i + 10);
        sqlite3_bind_text(st, 8, models[i].doc, -1, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    /* Only m1 has a group: the column is NULL elsewhere (must_not must still keep those). */
    exec_ok(db, "INSERT INTO model_groups(id, name, created_time, last_updated_time, doc) "
                "VALUES('g1', 'group one', 1, 1, '{}');"
                "UPDATE models SET model_group_id = 'g1' WHERE id = 'm1';");
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[256] = "";
    assert_int_equal(sqlite3_open(":memory:", &f->conn.db), SQLITE_OK);
    int rc = store__migrate(f->conn.db, store__migrations, store__migrations_count, err,
                            sizeof(err));
    if (rc != MLR_OK)
        fail_msg("migrate: %s", err);
    assert_int_equal(store__search_register(f->conn.db), MLR_OK);
    insert_models(f->conn.db);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(sqlite3_close(f->conn.db), SQLITE_OK);
    free(f);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Helpers                                                                                    */
/* ------------------------------------------------------------------------------------------ */

static struct json_object *parse(const char *text)
{
    if (text == NULL)
        return NULL;
    /* Deeper than json-c's default of 32 levels: the nesting-limit case needs 42. */
    struct json_tokener *tok = json_tokener_new_ex(128);
    struct json_object *v = json_tokener_parse_ex(tok, text, (int)strlen(text));
    json_tokener_free(tok);
    if (v == NULL)
        fail_msg("test body is not JSON: %s", text);
    return v;
}

/* Compiles and runs @body; the test fails on any error. The caller puts the response. */
static struct json_object *search(struct fixture *f, const struct store__index *ix,
                                  const char *body)
{
    struct json_object *b = parse(body), *resp = NULL;
    struct store__query q;
    char err[512] = "";
    int rc = store__search_compile(ix, b, &q, err, sizeof(err));
    if (rc != MLR_OK)
        fail_msg("compile %s: %s %s", body, q.err_type, err);
    rc = store__search_run(&f->conn, ix, &q, &resp);
    if (rc != MLR_OK)
        fail_msg("run %s: %s (%s)", body, mlr_err_name(rc), sqlite3_errmsg(f->conn.db));
    store__query_cleanup(&q);
    json_object_put(b);
    return resp;
}

static struct json_object *hits_of(struct json_object *resp)
{
    return json_object_object_get(json_object_object_get(resp, "hits"), "hits");
}

static struct json_object *hit(struct json_object *resp, size_t i)
{
    return json_object_array_get_idx(hits_of(resp), i);
}

static void join_ids(struct json_object *resp, char *buf, size_t n)
{
    struct json_object *hits = hits_of(resp);
    buf[0] = '\0';
    for (size_t i = 0; i < json_object_array_length(hits); i++) {
        const char *id = json_object_get_string(json_object_object_get(hit(resp, i), "_id"));
        size_t len = strlen(buf);
        snprintf(buf + len, n - len, "%s%s", i ? "," : "", id);
    }
}

/* Asserts that @body finds exactly the hits @want ("m1,m4"), in that order. */
static void expect_ids(struct fixture *f, const struct store__index *ix, const char *body,
                       const char *want)
{
    char got[1024];
    struct json_object *resp = search(f, ix, body);
    join_ids(resp, got, sizeof(got));
    if (strcmp(got, want) != 0)
        fail_msg("%s: got [%s], want [%s]", body, got, want);
    json_object_put(resp);
}

static void expect_models(struct fixture *f, const char *body, const char *want)
{
    expect_ids(f, &models_ix, body, want);
}

/* Asserts that @body is refused with exactly @type and @reason. */
static void expect_error(const struct store__index *ix, const char *body, const char *type,
                         const char *reason)
{
    struct json_object *b = parse(body);
    struct store__query q;
    char err[512] = "";
    int rc = store__search_compile(ix, b, &q, err, sizeof(err));
    if (rc != MLR_EINVAL)
        fail_msg("%s: expected MLR_EINVAL, got %s", body, mlr_err_name(rc));
    if (strcmp(q.err_type, type) != 0 || strcmp(err, reason) != 0)
        fail_msg("%s:\n got  %s: %s\n want %s: %s", body, q.err_type, err, type, reason);
    store__query_cleanup(&q);
    json_object_put(b);
}

static struct json_object *get_path(struct json_object *v, const char *a, const char *b)
{
    v = json_object_object_get(v, a);
    return b != NULL ? json_object_object_get(v, b) : v;
}

static int64_t total_value(struct json_object *resp)
{
    struct json_object *total = get_path(get_path(resp, "hits", NULL), "total", "value");
    assert_non_null(total);
    return json_object_get_int64(total);
}

static const char *total_relation(struct json_object *resp)
{
    return json_object_get_string(get_path(get_path(resp, "hits", NULL), "total", "relation"));
}

/* Returns the plan of the hits query of @body, every detail line joined. */
static void plan_of(struct fixture *f, const struct store__index *ix, const char *body, char *buf,
                    size_t n)
{
    struct json_object *b = parse(body);
    struct store__query q;
    char err[256] = "";
    sqlite3_stmt *st;
    assert_int_equal(store__search_compile(ix, b, &q, err, sizeof(err)), MLR_OK);
    char *sql = store__search_sql(ix, &q);
    char *explain = mlr_xasprintf("EXPLAIN QUERY PLAN %s", sql);
    if (sqlite3_prepare_v2(f->conn.db, explain, -1, &st, NULL) != SQLITE_OK)
        fail_msg("%s: %s", explain, sqlite3_errmsg(f->conn.db));
    buf[0] = '\0';
    while (sqlite3_step(st) == SQLITE_ROW) {
        size_t len = strlen(buf);
        snprintf(buf + len, n - len, "%s | ", (const char *)sqlite3_column_text(st, 3));
    }
    sqlite3_finalize(st);
    free(explain);
    free(sql);
    store__query_cleanup(&q);
    json_object_put(b);
}

static void insert_tasks(struct fixture *f, int n)
{
    sqlite3_stmt *st;
    exec_ok(f->conn.db, "BEGIN");
    assert_int_equal(sqlite3_prepare_v2(f->conn.db, "INSERT INTO tasks(id, task_type, state, "
                                                    "model_id, create_time, last_update_time, "
                                                    "doc) VALUES(?, ?, ?, ?, ?, ?, ?)",
                                        -1, &st, NULL),
                     SQLITE_OK);
    for (int i = 0; i < n; i++) {
        char id[16], model[16], doc[160];
        const char *state = i % 2 ? "FAILED" : "COMPLETED";
        snprintf(id, sizeof(id), "t%05d", i);
        snprintf(model, sizeof(model), "m%d", i % 7);
        snprintf(doc, sizeof(doc), "{\"task_type\":\"REGISTER_MODEL\",\"state\":\"%s\","
                                   "\"model_id\":\"m%d\",\"create_time\":%d}", state, i % 7, i);
        sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, "REGISTER_MODEL", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, state, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, model, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 5, i);
        sqlite3_bind_int64(st, 6, i);
        sqlite3_bind_text(st, 7, doc, -1, SQLITE_TRANSIENT);
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    exec_ok(f->conn.db, "COMMIT");
}

/* ------------------------------------------------------------------------------------------ */
/* Query types                                                                                */
/* ------------------------------------------------------------------------------------------ */

static void match_all_response_shape(void **state)
{
    struct fixture *f = *state;
    expect_models(f, NULL, "m1,m2,m3,m4,m5");
    expect_models(f, "{}", "m1,m2,m3,m4,m5");
    expect_models(f, "{\"query\":{\"match_all\":{\"boost\":1.2}}}", "m1,m2,m3,m4,m5");
    expect_models(f, "{\"query\":{\"match_none\":{}}}", "");

    struct json_object *r = search(f, &models_ix, "{\"query\":{\"match_all\":{}}}");
    assert_true(json_object_is_type(json_object_object_get(r, "took"), json_type_int));
    assert_false(json_object_get_boolean(json_object_object_get(r, "timed_out")));
    assert_int_equal(json_object_get_int(get_path(r, "_shards", "total")), 1);
    assert_int_equal(json_object_get_int(get_path(r, "_shards", "successful")), 1);
    assert_int_equal(json_object_get_int(get_path(r, "_shards", "skipped")), 0);
    assert_int_equal(json_object_get_int(get_path(r, "_shards", "failed")), 0);
    assert_int_equal(total_value(r), 5);
    assert_string_equal(total_relation(r), "eq");
    assert_true(json_object_get_double(get_path(r, "hits", "max_score")) == 1.0);
    struct json_object *h = hit(r, 1);
    assert_string_equal(json_object_get_string(get_path(h, "_index", NULL)), ".plugins-ml-model");
    assert_string_equal(json_object_get_string(get_path(h, "_id", NULL)), "m2");
    assert_int_equal(json_object_get_int(get_path(h, "_version", NULL)), 3);
    assert_int_equal(json_object_get_int(get_path(h, "_seq_no", NULL)), 11);
    assert_int_equal(json_object_get_int(get_path(h, "_primary_term", NULL)), 1);
    assert_true(json_object_get_double(get_path(h, "_score", NULL)) == 1.0);
    assert_string_equal(json_object_get_string(get_path(h, "_source", "name")), "OpenAI chat");
    assert_null(json_object_object_get(h, "sort"));
    json_object_put(r);
}

static void term_on_columns(void **state)
{
    struct fixture *f = *state;
    expect_models(f, "{\"query\":{\"term\":{\"model_state\":\"DEPLOYED\"}}}", "m1,m4");
    expect_models(f, "{\"query\":{\"term\":{\"model_state\":{\"value\":\"DEPLOYED\",\"boost\":2}}}}",
                  "m1,m4");
    expect_models(f, "{\"query\":{\"term\":{\"model_state.keyword\":\"UNDEPLOYED\"}}}", "m5");
    expect_models(f, "{\"query\":{\"term\":{\"model_state\":\"deployed\"}}}", "");
    expect_models(f, "{\"query\":{\"term\":{\"model_state\":{\"value\":\"deployed\","
                     "\"case_insensitive\":true}}}}",
                  "m1,m4");
    expect_models(f, "{\"query\":{\"term\":{\"_id\":\"m3\"}}}", "m3");
    expect_models(f, "{\"query\":{\"term\":{\"name.keyword\":\"OpenAI chat\"}}}", "m2");
    /* Numeric columns compare numbers; numeric strings are converted as OpenSearch does. */
    expect_models(f, "{\"query\":{\"term\":{\"created_time\":200}}}", "m2,m4");
    expect_models(f, "{\"query\":{\"term\":{\"created_time\":\"200\"}}}", "m2,m4");
}

static void term_on_document_fields(void **state)
{
    struct fixture *f = *state;
    /* Arrays match when any element does; nested objects through dotted paths. */
    expect_models(f, "{\"query\":{\"term\":{\"tags\":\"prod\"}}}", "m1");
    expect_models(f, "{\"query\":{\"term\":{\"tags.keyword\":\"dev\"}}}", "m2");
    expect_models(f, "{\"query\":{\"term\":{\"connector.protocol\":\"aws_sigv4\"}}}", "m1");
    expect_models(f, "{\"query\":{\"term\":{\"connector.parameters.region\":\"us-east-1\"}}}",
                  "m1");
    expect_models(f, "{\"query\":{\"term\":{\"rating\":5}}}", "m1,m4");
    expect_models(f, "{\"query\":{\"term\":{\"is_hidden\":false}}}", "m1");
    expect_models(f, "{\"query\":{\"term\":{\"no_such_field\":\"x\"}}}", "");
}

static void terms_and_ids(void **state)
{
    struct fixture *f = *state;
    expect_models(f, "{\"query\":{\"terms\":{\"model_state\":[\"DEPLOYED\",\"UNDEPLOYED\"]}}}",
                  "m1,m4,m5");
    expect_models(f, "{\"query\":{\"terms\":{\"model_state\":[\"DEPLOYED\"],\"boost\":1}}}",
                  "m1,m4");
    expect_models(f, "{\"query\":{\"terms\":{\"model_state\":[]}}}", "");
    expect_models(f, "{\"query\":{\"terms\":{\"created_time\":[\"50\",300]}}}", "m3,m5");
    expect_models(f, "{\"query\":{\"terms\":{\"tags\":[\"embed\",\"dev\"]}}}", "m1,m2");
    expect_models(f, "{\"query\":{\"terms\":{\"_id\":[\"m2\",\"m5\"]}}}", "m2,m5");
    expect_models(f, "{\"query\":{\"ids\":{\"values\":[\"m3\",\"m1\",\"nope\"]}}}", "m1,m3");
    expect_models(f, "{\"query\":{\"ids\":{\"values\":[]}}}", "");
}

static void match_full_text(void **state)
{
    struct fixture *f = *state;
    expect_models(f, "{\"query\":{\"match\":{\"name\":\"openai\"}}}", "m2,m4");
    expect_models(f, "{\"query\":{\"match\":{\"name\":\"OpenAI embedding\"}}}", "m1,m2,m4");
    expect_models(f, "{\"query\":{\"match\":{\"name\":{\"query\":\"openai EMBEDDING\","
                     "\"operator\":\"and\"}}}}",
                  "m4");
    expect_models(f, "{\"query\":{\"match\":{\"name\":{\"query\":\"titan, cohere!\","
                     "\"operator\":\"or\",\"fuzziness\":\"AUTO\"}}}}",
                  "m1,m3,m5");
    /* Whole tokens only: "embed" is not a token of "embedding". */
    expect_models(f, "{\"query\":{\"match\":{\"name\":\"embed\"}}}", "");
    expect_models(f, "{\"query\":{\"match\":{\"description\":\"TEXT\"}}}", "m1,m4");
    expect_models(f, "{\"query\":{\"match\":{\"tags\":\"embed\"}}}", "m1");
    expect_models(f, "{\"query\":{\"match\":{\"name\":\"!!! ...\"}}}", "");
    /* Keyword and numeric fields are not analysed: exact comparison. */
    expect_models(f, "{\"query\":{\"match\":{\"name.keyword\":\"openai chat\"}}}", "");
    expect_models(f, "{\"query\":{\"match\":{\"name.keyword\":\"OpenAI chat\"}}}", "m2");
    expect_models(f, "{\"query\":{\"match\":{\"created_time\":\"100\"}}}", "m1");
    expect_models(f, "{\"query\":{\"match\":{\"model_state\":\"deploy_failed\"}}}", "m3");
}

static void range_queries(void **state)
{
    struct fixture *f = *state;
    expect_models(f, "{\"query\":{\"range\":{\"created_time\":{\"gte\":200}}}}", "m2,m3,m4");
    expect_models(f, "{\"query\":{\"range\":{\"created_time\":{\"gt\":100,\"lt\":300}}}}",
                  "m2,m4");
    expect_models(f, "{\"query\":{\"range\":{\"created_time\":{\"gte\":\"100\",\"lte\":200}}}}",
                  "m1,m2,m4");
    expect_models(f, "{\"query\":{\"range\":{\"created_time\":{\"from\":100,\"to\":200,"
                     "\"include_lower\":false}}}}",
                  "m2,m4");
    expect_models(f, "{\"query\":{\"range\":{\"created_time\":{\"lt\":null}}}}",
                  "m1,m2,m3,m4,m5");
    expect_models(f, "{\"query\":{\"range\":{\"name\":{\"gte\":\"O\",\"lt\":\"P\"}}}}", "m2,m4");
    expect_models(f, "{\"query\":{\"range\":{\"rating\":{\"gte\":4}}}}", "m1,m3,m4");
    expect_models(f, "{\"query\":{\"range\":{\"rating\":{}}}}", "m1,m2,m3,m4");
}

static void exists_queries(void **state)
{
    struct fixture *f = *state;
    /* null, [] and a missing key are all "does not exist", as in OpenSearch. */
    expect_models(f, "{\"query\":{\"exists\":{\"field\":\"description\"}}}", "m1,m2,m4");
    expect_models(f, "{\"query\":{\"exists\":{\"field\":\"tags\"}}}", "m1,m2");
    expect_models(f, "{\"query\":{\"exists\":{\"field\":\"connector.parameters\"}}}", "m1");
    expect_models(f, "{\"query\":{\"exists\":{\"field\":\"model_group_id\"}}}", "m1");
    expect_models(f, "{\"query\":{\"exists\":{\"field\":\"connector_id\"}}}", "");
    expect_models(f, "{\"query\":{\"exists\":{\"field\":\"name\",\"boost\":1}}}",
                  "m1,m2,m3,m4,m5");
}

static void bool_combinations(void **state)
{
    struct fixture *f = *state;
    expect_models(f, "{\"query\":{\"bool\":{}}}", "m1,m2,m3,m4,m5");
    expect_models(f, "{\"query\":{\"bool\":{\"must\":{\"term\":{\"model_state\":\"DEPLOYED\"}},"
                     "\"filter\":[{\"range\":{\"created_time\":{\"gte\":150}}}]}}}",
                  "m4");
    expect_models(f, "{\"query\":{\"bool\":{\"must_not\":[{\"term\":{\"model_state\":"
                     "\"DEPLOYED\"}},{\"ids\":{\"values\":[\"m5\"]}}]}}}",
                  "m2,m3");
    /* must_not on a field a document lacks keeps that document. */
    expect_models(f, "{\"query\":{\"bool\":{\"must_not\":{\"term\":{\"rating\":5}}}}}",
                  "m2,m3,m5");
    expect_models(f, "{\"query\":{\"bool\":{\"must_not\":{\"exists\":{\"field\":\"tags\"}}}}}",
                  "m3,m4,m5");
    /* ...and so does must_not on a column that is NULL (SQL's NOT NULL is not true). */
    expect_models(f, "{\"query\":{\"bool\":{\"must_not\":{\"term\":{\"model_group_id\":"
                     "\"g1\"}}}}}",
                  "m2,m3,m4,m5");
    expect_models(f, "{\"query\":{\"bool\":{\"must_not\":{\"bool\":{\"must_not\":"
                     "{\"term\":{\"model_group_id\":\"g1\"}}}}}}}",
                  "m1");
    /* should alone: at least one must match. */
    expect_models(f, "{\"query\":{\"bool\":{\"should\":[{\"term\":{\"_id\":\"m1\"}},{\"term\":"
                     "{\"_id\":\"m5\"}}]}}}",
                  "m1,m5");
    /* should next to must: optional, it only scores. */
    expect_models(f, "{\"query\":{\"bool\":{\"must\":{\"match\":{\"name\":\"openai\"}},"
                     "\"should\":[{\"term\":{\"_id\":\"m1\"}}]}}}",
                  "m2,m4");
    /* Nesting. */
    expect_models(f, "{\"query\":{\"bool\":{\"filter\":{\"bool\":{\"should\":[{\"term\":"
                     "{\"model_state\":\"DEPLOYED\"}},{\"bool\":{\"must\":[{\"range\":"
                     "{\"created_time\":{\"lt\":100}}}]}}]}},\"must_not\":{\"match\":"
                     "{\"name\":\"openai\"}}}}}",
                  "m1,m5");
    expect_models(f, "{\"query\":{\"constant_score\":{\"filter\":{\"term\":{\"rating\":4}}}}}",
                  "m3");
}

static void minimum_should_match(void **state)
{
    struct fixture *f = *state;
    const char *head = "{\"query\":{\"bool\":{\"should\":[{\"term\":{\"model_state\":"
                       "\"DEPLOYED\"}},{\"range\":{\"created_time\":{\"gte\":200}}},{\"term\":"
                       "{\"rating\":5}}],\"minimum_should_match\":";
    static const struct {
        const char *msm, *want;
    } cases[] = {
        {"1", "m1,m2,m3,m4"}, {"2", "m1,m4"},       {"\"2\"", "m1,m4"}, {"3", "m4"},
        {"4", ""},            {"\"-1\"", "m1,m4"},  {"\"67%\"", "m1,m4"}, {"\"66%\"", "m1,m2,m3,m4"},
        {"\"-34%\"", "m1,m4"}, {"\"100%\"", "m4"}, {"0", "m1,m2,m3,m4"},
    };
    for (size_t i = 0; i < N(cases); i++) {
        char body[512];
        snprintf(body, sizeof(body), "%s%s}}}", head, cases[i].msm);
        expect_models(f, body, cases[i].want);
    }
    /* With must present, should is optional unless minimum_should_match says otherwise. */
    expect_models(f, "{\"query\":{\"bool\":{\"must\":{\"exists\":{\"field\":\"rating\"}},"
                     "\"should\":[{\"term\":{\"_id\":\"m3\"}}],\"minimum_should_match\":1}}}",
                  "m3");
    expect_models(f, "{\"query\":{\"bool\":{\"filter\":{\"exists\":{\"field\":\"rating\"}},"
                     "\"should\":[{\"term\":{\"_id\":\"m3\"}}]}}}",
                  "m1,m2,m3,m4");
}

static double first_score(struct json_object *r)
{
    return json_object_get_double(json_object_object_get(hit(r, 0), "_score"));
}

static void scores(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *body;
        double score;
    } cases[] = {
        {"{\"query\":{\"bool\":{\"filter\":{\"term\":{\"model_state\":\"DEPLOYED\"}}}}}", 0.0},
        {"{\"query\":{\"bool\":{\"must_not\":{\"term\":{\"model_state\":\"DEPLOYED\"}}}}}", 0.0},
        {"{\"query\":{\"bool\":{\"must\":{\"term\":{\"model_state\":\"DEPLOYED\"}}}}}", 1.0},
        {"{\"query\":{\"bool\":{\"filter\":{\"match_all\":{}},\"should\":{\"match_all\":{}}}}}",
         1.0},
        {"{\"query\":{\"bool\":{\"must\":{\"bool\":{\"filter\":{\"match_all\":{}}}}}}}", 1.0},
        {"{\"query\":{\"term\":{\"model_state\":\"DEPLOYED\"}}}", 1.0},
        {"{\"query\":{\"bool\":{}}}", 1.0},
        {"{}", 1.0},
    };
    for (size_t i = 0; i < N(cases); i++) {
        struct json_object *r = search(f, &models_ix, cases[i].body);
        if (first_score(r) != cases[i].score ||
            json_object_get_double(get_path(r, "hits", "max_score")) != cases[i].score)
            fail_msg("%s: score %g, want %g", cases[i].body, first_score(r), cases[i].score);
        json_object_put(r);
    }
    struct json_object *r = search(f, &models_ix, "{\"query\":{\"ids\":{\"values\":[\"x\"]}}}");
    assert_null(get_path(r, "hits", "max_score"));
    assert_true(json_object_is_type(get_path(r, "hits", "hits"), json_type_array));
    json_object_put(r);
}

static void sort_orders(void **state)
{
    struct fixture *f = *state;
    /* m2 and m4 share created_time 200: the id breaks the tie, ascending either way. */
    expect_models(f, "{\"sort\":[{\"created_time\":\"desc\"}]}", "m3,m2,m4,m1,m5");
    expect_models(f, "{\"sort\":{\"created_time\":{\"order\":\"asc\"}}}", "m5,m1,m2,m4,m3");
    expect_models(f, "{\"sort\":\"created_time\"}", "m5,m1,m2,m4,m3");
    expect_models(f, "{\"sort\":[{\"created_time\":\"DESC\"},{\"_id\":\"desc\"}]}",
                  "m3,m4,m2,m1,m5");
    expect_models(f, "{\"sort\":[\"_score\",{\"name.keyword\":\"asc\"}]}", "m1,m3,m2,m4,m5");
    expect_models(f, "{\"sort\":[{\"_id\":\"desc\"}]}", "m5,m4,m3,m2,m1");
    /* Document fields; missing values sort last in both directions. */
    expect_models(f, "{\"sort\":[{\"rating\":\"desc\"}]}", "m1,m4,m3,m2,m5");
    expect_models(f, "{\"sort\":[{\"rating\":{\"order\":\"asc\",\"unmapped_type\":\"long\"}}]}",
                  "m2,m3,m1,m4,m5");
    /* Tasks default to create_time order. */
    insert_tasks(f, 3);
    expect_ids(f, &tasks_ix, "{\"sort\":{\"create_time\":\"desc\"}}", "t00002,t00001,t00000");
    expect_ids(f, &tasks_ix, "{}", "t00000,t00001,t00002");

    struct json_object *r = search(f, &models_ix, "{\"sort\":[{\"created_time\":\"desc\"},"
                                                  "\"_score\",{\"rating\":\"asc\"}]}");
    struct json_object *sv = json_object_object_get(hit(r, 0), "sort");
    assert_int_equal(json_object_array_length(sv), 3);
    assert_int_equal(json_object_get_int(json_object_array_get_idx(sv, 0)), 300);
    assert_true(json_object_get_double(json_object_array_get_idx(sv, 1)) == 1.0);
    assert_int_equal(json_object_get_int(json_object_array_get_idx(sv, 2)), 4);
    sv = json_object_object_get(hit(r, 4), "sort"); /* m5: no rating */
    assert_null(json_object_array_get_idx(sv, 2));
    assert_int_equal(json_object_array_length(sv), 3);
    json_object_put(r);
}

static void paging(void **state)
{
    struct fixture *f = *state;
    expect_models(f, "{\"size\":2}", "m1,m2");
    expect_models(f, "{\"from\":2,\"size\":2}", "m3,m4");
    expect_models(f, "{\"from\":4,\"size\":2}", "m5");
    expect_models(f, "{\"from\":\"1\",\"size\":\"1\"}", "m2");
    expect_models(f, "{\"from\":10,\"size\":10}", "");
    expect_models(f, "{\"from\":1,\"size\":2,\"sort\":{\"created_time\":\"desc\"}}", "m2,m4");
    struct json_object *r = search(f, &models_ix, "{\"size\":0}");
    assert_int_equal(json_object_array_length(hits_of(r)), 0);
    assert_int_equal(total_value(r), 5);
    json_object_put(r);
}

/* Runs @body and returns the first hit's _source as JSON text (static buffer). */
static const char *source_text(struct fixture *f, const char *body)
{
    static char buf[1024];
    struct json_object *r = search(f, &models_ix, body);
    struct json_object *src = NULL;
    int has = json_object_object_get_ex(hit(r, 0), "_source", &src);
    snprintf(buf, sizeof(buf), "%s",
             has ? json_object_to_json_string_ext(src, JSON_C_TO_STRING_PLAIN) : "(none)");
    json_object_put(r);
    return buf;
}

static void source_filtering(void **state)
{
    struct fixture *f = *state;
    const char *ids = "\"query\":{\"ids\":{\"values\":[\"m1\"]}}";
    char body[512];
    static const struct {
        const char *source, *want;
    } cases[] = {
        {"false", "(none)"},
        {"\"name\"", "{\"name\":\"Bedrock Titan embedding\"}"},
        {"[\"rating\",\"model_*\"]", "{\"model_state\":\"DEPLOYED\",\"rating\":5}"},
        {"{\"includes\":[\"connector.*\"],\"excludes\":[\"connector.parameters\"]}",
         "{\"connector\":{\"protocol\":\"aws_sigv4\"}}"},
        {"{\"includes\":\"connector.parameters.region\"}",
         "{\"connector\":{\"parameters\":{\"region\":\"us-east-1\"}}}"},
        {"{\"excludes\":[\"connector\",\"tags\",\"*ion\",\"is_*\"]}",
         "{\"name\":\"Bedrock Titan embedding\",\"model_state\":\"DEPLOYED\",\"rating\":5}"},
        {"{\"include\":[\"tags\"],\"exclude\":[]}", "{\"tags\":[\"prod\",\"embed\"]}"},
        {"\"nothing_here\"", "{}"},
    };
    for (size_t i = 0; i < N(cases); i++) {
        snprintf(body, sizeof(body), "{%s,\"_source\":%s}", ids, cases[i].source);
        const char *got = source_text(f, body);
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("_source %s: got %s, want %s", cases[i].source, got, cases[i].want);
    }
    /* Nulls survive filtering as nulls. */
    assert_string_equal(source_text(f, "{\"query\":{\"ids\":{\"values\":[\"m3\"]}},"
                                       "\"_source\":[\"description\",\"tags\"]}"),
                        "{\"description\":null,\"tags\":[]}");
}

static void credentials_never_returned(void **state)
{
    struct fixture *f = *state;
    static const char *const bodies[] = {
        "{}",
        "{\"_source\":[\"credential\",\"connector.credential\",\"connector.credential.*\"]}",
        "{\"_source\":{\"includes\":[\"*\"]}}",
        "{\"_source\":true}",
    };
    for (size_t i = 0; i < N(bodies); i++) {
        struct json_object *r = search(f, &models_ix, bodies[i]);
        for (size_t h = 0; h < json_object_array_length(hits_of(r)); h++) {
            const char *text = json_object_to_json_string(hit(r, h));
            if (strstr(text, "credential") || strstr(text, "secret") || strstr(text, "AKIA") ||
                strstr(text, "sk-x"))
                fail_msg("%s leaks a credential: %s", bodies[i], text);
        }
        json_object_put(r);
    }
    /* The rest of the connector is still there. */
    assert_string_equal(source_text(f, "{\"_source\":\"connector.protocol\"}"),
                        "{\"connector\":{\"protocol\":\"aws_sigv4\"}}");
}

static void totals_eq_and_gte(void **state)
{
    struct fixture *f = *state;
    insert_tasks(f, 10050);
    struct json_object *r = search(f, &tasks_ix, "{}");
    assert_int_equal(total_value(r), 10000);
    assert_string_equal(total_relation(r), "gte");
    assert_int_equal(json_object_array_length(hits_of(r)), 10);
    json_object_put(r);

    r = search(f, &tasks_ix, "{\"track_total_hits\":true,\"size\":1}");
    assert_int_equal(total_value(r), 10050);
    assert_string_equal(total_relation(r), "eq");
    json_object_put(r);

    r = search(f, &tasks_ix, "{\"query\":{\"term\":{\"state\":\"FAILED\"}}}");
    assert_int_equal(total_value(r), 5025);
    assert_string_equal(total_relation(r), "eq");
    json_object_put(r);

    r = search(f, &tasks_ix, "{\"track_total_hits\":100}");
    assert_int_equal(total_value(r), 100);
    assert_string_equal(total_relation(r), "gte");
    json_object_put(r);

    r = search(f, &tasks_ix, "{\"track_total_hits\":false}");
    assert_null(get_path(get_path(r, "hits", NULL), "total", NULL));
    assert_int_equal(json_object_array_length(hits_of(r)), 10);
    json_object_put(r);

    r = search(f, &tasks_ix, "{\"query\":{\"range\":{\"create_time\":{\"gte\":50}}},"
                             "\"track_total_hits\":10000}");
    assert_int_equal(total_value(r), 10000);
    assert_string_equal(total_relation(r), "eq");
    json_object_put(r);

    expect_ids(f, &tasks_ix, "{\"from\":9997,\"size\":3}", "t09997,t09998,t09999");
    r = search(f, &tasks_ix, "{\"size\":10000,\"_source\":false}");
    assert_int_equal(json_object_array_length(hits_of(r)), 10000);
    json_object_put(r);
}

/* ------------------------------------------------------------------------------------------ */
/* Errors                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static void error_unknown_query(void **state)
{
    UNUSED(state);
    expect_error(&models_ix, "{\"query\":{\"wildcard\":{\"name\":\"op*\"}}}", "parsing_exception",
                 "unknown query [wildcard]");
    expect_error(&models_ix, "{\"query\":{\"bool\":{\"filter\":[{\"term\":{\"a\":1}},"
                             "{\"query_string\":{\"query\":\"x\"}}]}}}",
                 "parsing_exception", "unknown query [query_string]");
    /* Clauses that do not filter are still parsed and refused. */
    expect_error(&models_ix, "{\"query\":{\"bool\":{\"must\":{\"match_all\":{}},\"should\":"
                             "{\"prefix\":{\"name\":\"o\"}}}}}",
                 "parsing_exception", "unknown query [prefix]");
}

static void error_bad_sort(void **state)
{
    UNUSED(state);
    expect_error(&models_ix, "{\"sort\":[{\"name; DROP TABLE models\":\"asc\"}]}",
                 "query_shard_exception",
                 "No mapping found for [name; DROP TABLE models] in order to sort on");
    expect_error(&models_ix, "{\"sort\":\"a')--\"}", "query_shard_exception",
                 "No mapping found for [a')--] in order to sort on");
    expect_error(&models_ix, "{\"sort\":{\"name\":\"up\"}}", "illegal_argument_exception",
                 "Unknown SortOrder [up]");
    expect_error(&models_ix, "{\"sort\":{\"name\":{\"order\":\"desc\",\"nested\":{}}}}",
                 "x_content_parse_exception", "[field_sort] unknown field [nested]");
    expect_error(&models_ix, "{\"sort\":[1]}", "parsing_exception",
                 "malformed sort format, within the sort array, an object, or an actual string "
                 "are allowed");
}

static void error_result_window(void **state)
{
    UNUSED(state);
    expect_error(&models_ix, "{\"size\":20000}", "illegal_argument_exception",
                 "Result window is too large, from + size must be less than or equal to: [10000] "
                 "but was [20000]. See the scroll api for a more efficient way to request large "
                 "data sets. This limit can be set by changing the [index.max_result_window] "
                 "index level setting.");
    expect_error(&models_ix, "{\"from\":9995,\"size\":10}", "illegal_argument_exception",
                 "Result window is too large, from + size must be less than or equal to: [10000] "
                 "but was [10005]. See the scroll api for a more efficient way to request large "
                 "data sets. This limit can be set by changing the [index.max_result_window] "
                 "index level setting.");
    expect_error(&models_ix, "{\"size\":-1}", "illegal_argument_exception",
                 "[size] parameter cannot be negative, found [-1]");
    expect_error(&models_ix, "{\"from\":-5}", "illegal_argument_exception",
                 "[from] parameter cannot be negative, found [-5]");
    expect_error(&models_ix, "{\"size\":\"ten\"}", "x_content_parse_exception",
                 "[search_source] failed to parse field [size]");
    expect_error(&models_ix, "{\"size\":99999999999}", "x_content_parse_exception",
                 "Numeric value (99999999999) out of range of int");
    expect_error(&models_ix, "{\"track_total_hits\":-2}", "illegal_argument_exception",
                 "[track_total_hits] parameter must be positive or equals to -1, got -2");
}

static void error_malformed(void **state)
{
    UNUSED(state);
    static const struct {
        const char *body, *type, *reason;
    } cases[] = {
        {"[]", "parsing_exception", "Expected [START_OBJECT] but found [START_ARRAY]"},
        {"{\"query\":\"x\"}", "parsing_exception", "Unknown key for a VALUE_STRING in [query]."},
        {"{\"qurey\":{}}", "parsing_exception", "Unknown key for a START_OBJECT in [qurey]."},
        {"{\"size\":null}", "parsing_exception", "Unknown key for a VALUE_NULL in [size]."},
        {"{\"aggs\":{}}", "illegal_argument_exception",
         "[aggs] is not supported by this service's _search"},
        {"{\"query\":{}}", "parsing_exception", "query malformed, empty clause found"},
        {"{\"query\":{\"term\":{\"a\":1},\"match_all\":{}}}", "parsing_exception",
         "[term] malformed query, expected [END_OBJECT] but found [FIELD_NAME]"},
        {"{\"query\":{\"match_all\":[]}}", "parsing_exception",
         "[match_all] query malformed, no start_object after query name"},
        {"{\"query\":{\"match_all\":{\"x\":1}}}", "parsing_exception",
         "[match_all] query does not support [x]"},
        {"{\"query\":{\"term\":{\"a\":1,\"b\":2}}}", "parsing_exception",
         "[term] query doesn't support multiple fields, found [a] and [b]"},
        {"{\"query\":{\"term\":{\"a\":[1]}}}", "parsing_exception",
         "[term] query does not support array of values"},
        {"{\"query\":{\"term\":{\"a\":null}}}", "illegal_argument_exception",
         "value cannot be null"},
        {"{\"query\":{\"term\":{\"a\":{\"val\":1}}}}", "parsing_exception",
         "[term] query does not support [val]"},
        {"{\"query\":{\"term\":{}}}", "illegal_argument_exception",
         "[term] requires a field name"},
        {"{\"query\":{\"terms\":{\"a\":\"x\"}}}", "parsing_exception",
         "[terms] query does not support [a]"},
        {"{\"query\":{\"terms\":{\"a\":{\"index\":\"i\",\"id\":\"1\"}}}}", "parsing_exception",
         "[terms] query lookup is not supported"},
        {"{\"query\":{\"terms\":{\"a\":[{}]}}}", "parsing_exception",
         "[terms] query does not support values of type [START_OBJECT]"},
        {"{\"query\":{\"ids\":{\"values\":\"m1\"}}}", "x_content_parse_exception",
         "[ids] failed to parse field [values]"},
        {"{\"query\":{\"match\":{\"name\":{\"query\":\"x\",\"slop\":1}}}}", "parsing_exception",
         "[match] query does not support [slop]"},
        {"{\"query\":{\"match\":{\"name\":[\"x\"]}}}", "parsing_exception",
         "[match] unknown token [START_ARRAY] after [name]"},
        {"{\"query\":{\"range\":{\"created_time\":{\"above\":1}}}}", "parsing_exception",
         "[range] query does not support [above]"},
        {"{\"query\":{\"range\":{\"created_time\":5}}}", "parsing_exception",
         "[range] query does not support [created_time]"},
        {"{\"query\":{\"exists\":{}}}", "parsing_exception",
         "[exists] must be provided with a [field]"},
        {"{\"query\":{\"bool\":{\"must\":\"x\"}}}", "parsing_exception",
         "[bool] query does not support [must]"},
        {"{\"query\":{\"bool\":{\"shuold\":[]}}}", "parsing_exception",
         "[bool] query does not support [shuold]"},
        {"{\"query\":{\"bool\":{\"must\":[1]}}}", "parsing_exception",
         "[_na] query malformed, must start with start_object"},
        {"{\"query\":{\"bool\":{\"should\":[],\"minimum_should_match\":\"2<50%\"}}}",
         "illegal_argument_exception", "[bool] unsupported minimum_should_match [2<50%]"},
        {"{\"query\":{\"constant_score\":{}}}", "parsing_exception",
         "[constant_score] requires a 'filter' element"},
        {"{\"query\":{\"term\":{\"created_time\":\"yesterday\"}}}", "query_shard_exception",
         "failed to create query: For input string: \"yesterday\""},
        {"{\"_source\":{\"includes\":[1]}}", "parsing_exception",
         "Unknown key for a VALUE_NUMBER in [includes]."},
        {"{\"_source\":{\"fields\":[\"a\"]}}", "parsing_exception",
         "Unknown key for a START_ARRAY in [fields]."},
    };
    for (size_t i = 0; i < N(cases); i++)
        expect_error(&models_ix, cases[i].body, cases[i].type, cases[i].reason);
}

static void injection_refused_or_bound(void **state)
{
    struct fixture *f = *state;
    static const char *const names[] = {
        "name') OR 1=1 --", "a'b", "a b", "a\"b", "$.a", "a..b", "a.", ".a", "1a", "a[0]", "",
        "a*",
    };
    for (size_t i = 0; i < N(names); i++) {
        char body[256], reason[256];
        struct json_object *b = json_object_new_object(), *q = json_object_new_object(),
                           *t = json_object_new_object();
        json_object_object_add(t, names[i], json_object_new_string("x"));
        json_object_object_add(q, "term", t);
        json_object_object_add(b, "query", q);
        snprintf(body, sizeof(body), "%s", json_object_to_json_string(b));
        snprintf(reason, sizeof(reason), "field name [%s] is not supported: use letters, digits, "
                                         "'_' and '.'", names[i]);
        expect_error(&models_ix, body, "illegal_argument_exception", reason);
        json_object_put(b);
    }
    /* Values are bound, never spliced: quotes are just characters. */
    expect_models(f, "{\"query\":{\"term\":{\"name\":\"x' OR '1'='1\"}}}", "");
    expect_models(f, "{\"query\":{\"term\":{\"description\":\"x') OR 1=1 --\"}}}", "");
    expect_models(f, "{\"query\":{\"match\":{\"name\":\"'); DROP TABLE models; --\"}}}", "");
    expect_models(f, "{\"query\":{\"terms\":{\"name\":[\"\\\"]\", \"x'\"]}}}", "");
    expect_models(f, "{}", "m1,m2,m3,m4,m5"); /* the table is still there */
}

/* ------------------------------------------------------------------------------------------ */
/* Plans, schema variants, limits, the SQL function                                           */
/* ------------------------------------------------------------------------------------------ */

static void assert_plan(struct fixture *f, const struct store__index *ix, const char *body,
                        const char *want)
{
    char plan[2048];
    plan_of(f, ix, body, plan, sizeof(plan));
    if (strstr(plan, want) == NULL)
        fail_msg("%s: plan [%s] lacks [%s]", body, plan, want);
}

static void term_uses_index(void **state)
{
    struct fixture *f = *state;
    /* Either index led by state serves it (tasks_queue or tasks_state). */
    assert_plan(f, &tasks_ix, "{\"query\":{\"term\":{\"state\":\"FAILED\"}}}",
                "(state=?)");
    assert_plan(f, &tasks_ix, "{\"query\":{\"term\":{\"state\":\"FAILED\"}}}",
                "SEARCH tasks USING INDEX tasks_");
    assert_plan(f, &tasks_ix, "{\"query\":{\"bool\":{\"filter\":[{\"term\":{\"model_id\":"
                              "\"m1\"}},{\"match\":{\"doc_text\":\"x\"}}]}}}",
                "SEARCH tasks USING INDEX tasks_model (model_id=?)");
    assert_plan(f, &tasks_ix, "{\"query\":{\"terms\":{\"task_type\":[\"A\",\"B\"]}}}",
                "USING INDEX tasks_type (task_type=?)");
    assert_plan(f, &tasks_ix, "{\"query\":{\"ids\":{\"values\":[\"t1\"]}}}", "USING INDEX");
    assert_plan(f, &models_ix, "{\"query\":{\"term\":{\"model_state\":\"DEPLOYED\"}}}",
                "SEARCH models USING INDEX models_state (model_state=?)");
    assert_plan(f, &models_ix, "{\"query\":{\"match\":{\"model_state.keyword\":\"DEPLOYED\"}}}",
                "USING INDEX models_state");
    assert_plan(f, &models_ix, "{\"query\":{\"bool\":{\"filter\":{\"term\":{\"model_state\":"
                               "\"DEPLOYED\"}}}},\"sort\":{\"created_time\":\"desc\"}}",
                "SEARCH models USING INDEX models_state (model_state=?)");

    /* The bounded count uses the index too, a covering one. */
    struct json_object *b = parse("{\"query\":{\"term\":{\"state\":\"FAILED\"}}}");
    struct store__query q;
    char err[256], plan[1024] = "";
    sqlite3_stmt *st;
    assert_int_equal(store__search_compile(&tasks_ix, b, &q, err, sizeof(err)), MLR_OK);
    char *sql = mlr_xasprintf("EXPLAIN QUERY PLAN SELECT count(*) FROM (SELECT 1 FROM tasks "
                              "WHERE %s LIMIT ?)", q.where.data);
    assert_int_equal(sqlite3_prepare_v2(f->conn.db, sql, -1, &st, NULL), SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW)
        strncat(plan, (const char *)sqlite3_column_text(st, 3), sizeof(plan) - strlen(plan) - 1);
    sqlite3_finalize(st);
    assert_non_null(strstr(plan, "USING COVERING INDEX tasks_"));
    free(sql);
    store__query_cleanup(&q);
    json_object_put(b);
}

static void version_columns_optional(void **state)
{
    struct fixture *f = *state;
    static const struct store__index legacy = {"legacy", ".plugins-ml-connector", NULL, 0,
                                               "rowid"};
    exec_ok(f->conn.db, "CREATE TABLE legacy(id TEXT PRIMARY KEY, doc TEXT NOT NULL);"
                        "INSERT INTO legacy VALUES('c1', '{\"name\":\"a\",\"credential\":"
                        "{\"k\":\"v\"}}'), ('c2', '{\"name\":\"b\"}');");
    struct json_object *r = search(f, &legacy, "{\"query\":{\"term\":{\"name\":\"a\"}}}");
    assert_int_equal(json_object_array_length(hits_of(r)), 1);
    struct json_object *h = hit(r, 0);
    assert_string_equal(json_object_get_string(get_path(h, "_index", NULL)),
                        ".plugins-ml-connector");
    assert_int_equal(json_object_get_int(get_path(h, "_version", NULL)), 1);
    assert_int_equal(json_object_get_int(get_path(h, "_seq_no", NULL)), 0);
    assert_string_equal(json_object_to_json_string_ext(get_path(h, "_source", NULL),
                                                       JSON_C_TO_STRING_PLAIN),
                        "{\"name\":\"a\"}");
    json_object_put(r);
}

/* {"query": {"bool": {"should": [n terms]}}} as text (heap). */
static char *many_should(int n)
{
    struct json_object *arr = json_object_new_array();
    for (int i = 0; i < n; i++) {
        struct json_object *t = json_object_new_object(), *c = json_object_new_object();
        json_object_object_add(t, "rating", json_object_new_int(i));
        json_object_object_add(c, "term", t);
        json_object_array_add(arr, c);
    }
    struct json_object *b = json_object_new_object(), *q = json_object_new_object();
    json_object_object_add(b, "should", arr);
    json_object_object_add(q, "bool", b);
    struct json_object *body = json_object_new_object();
    json_object_object_add(body, "query", q);
    char *text = mlr_xstrdup(json_object_to_json_string(body));
    json_object_put(body);
    return text;
}

/* {"query": {"bool": {"must": ... n levels ... {"match_all": {}}}}} (heap). */
static char *deep_bool(int levels)
{
    struct json_object *q = json_object_new_object();
    json_object_object_add(q, "match_all", json_object_new_object());
    for (int i = 1; i < levels; i++) {
        struct json_object *b = json_object_new_object(), *o = json_object_new_object();
        json_object_object_add(b, "must", q);
        json_object_object_add(o, "bool", b);
        q = o;
    }
    struct json_object *body = json_object_new_object();
    json_object_object_add(body, "query", q);
    char *text = mlr_xstrdup(json_object_to_json_string(body));
    json_object_put(body);
    return text;
}

static void limits(void **state)
{
    struct fixture *f = *state;
    /* 1023 should clauses plus the bool itself: exactly the limit, and SQLite accepts it. */
    char *body = many_should(1023);
    expect_models(f, body, "m1,m2,m3,m4");
    free(body);
    body = many_should(1024);
    expect_error(&models_ix, body, "too_many_clauses", "maxClauseCount is set to 1024");
    free(body);

    body = deep_bool(20);
    expect_models(f, body, "m1,m2,m3,m4,m5");
    free(body);
    body = deep_bool(21);
    expect_error(&models_ix, body, "illegal_argument_exception",
                 "query is nested too deeply: more than [20] levels");
    free(body);

    struct json_object *vals = json_object_new_array(), *ids = json_object_new_object();
    for (int i = 0; i < 65537; i++)
        json_object_array_add(vals, json_object_new_int(i));
    json_object_object_add(ids, "rating", vals);
    struct json_object *q = json_object_new_object(), *b = json_object_new_object();
    json_object_object_add(q, "terms", ids);
    json_object_object_add(b, "query", q);
    expect_error(&models_ix, json_object_to_json_string(b), "illegal_argument_exception",
                 "The number of terms [65537] used in the Terms Query request has exceeded the "
                 "allowed maximum of [65536]. This maximum can be set by changing the "
                 "[index.max_terms_count] index level setting.");
    json_object_array_del_idx(vals, 0, 1);
    expect_models(f, json_object_to_json_string(b), "m1,m2,m3,m4"); /* 1..65536 */
    json_object_put(b);
}

static int sql_match(sqlite3 *db, const char *value, const char *query, int all)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT mlr_match(?, ?, ?)", -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(st, 1, value, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, query, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, all);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int r = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return r;
}

static void match_function(void **state)
{
    struct fixture *f = *state;
    sqlite3 *db = f->conn.db;
    assert_int_equal(sql_match(db, "Hello, World!", "world", 0), 1);
    assert_int_equal(sql_match(db, "Hello, World!", "WORLD peace", 0), 1);
    assert_int_equal(sql_match(db, "Hello, World!", "WORLD peace", 1), 0);
    assert_int_equal(sql_match(db, "Hello, World!", "hello world", 1), 1);
    assert_int_equal(sql_match(db, "Hello, World!", "wor", 0), 0);
    assert_int_equal(sql_match(db, "Hello, World!", "", 0), 0);
    assert_int_equal(sql_match(db, "Hello, World!", "", 1), 0);
    assert_int_equal(sql_match(db, NULL, "x", 0), 0);
    assert_int_equal(sql_match(db, "PARTIALLY_DEPLOYED", "partially", 0), 0);
    assert_int_equal(sql_match(db, "PARTIALLY_DEPLOYED", "partially_deployed", 0), 1);
    assert_int_equal(sql_match(db, "café au lait", "CAFÉ", 0), 0); /* non-ASCII: exact bytes */
    assert_int_equal(sql_match(db, "café au lait", "café", 0), 1);
}

static void cleanup_is_safe(void **state)
{
    UNUSED(state);
    struct store__query q;
    char err[128];
    memset(&q, 0, sizeof(q));
    store__query_cleanup(&q); /* a zeroed struct */
    struct json_object *b = parse("{\"query\":{\"term\":{\"name\":\"x\"}},\"sort\":\"name\","
                                  "\"_source\":{\"includes\":\"a\",\"excludes\":\"b\"}}");
    assert_int_equal(store__search_compile(&models_ix, b, &q, err, sizeof(err)), MLR_OK);
    assert_int_equal(q.nvals, 1);
    assert_int_equal(q.nsort, 1);
    assert_true(q.score == 1.0);
    store__query_cleanup(&q);
    store__query_cleanup(&q); /* twice: reusable */
    assert_int_equal(q.nvals, 0);
    assert_int_equal(store__search_compile(&models_ix, b, &q, err, sizeof(err)), MLR_OK);
    store__query_cleanup(&q);
    json_object_put(b);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(match_all_response_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(term_on_columns, setup, teardown),
        cmocka_unit_test_setup_teardown(term_on_document_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(terms_and_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(match_full_text, setup, teardown),
        cmocka_unit_test_setup_teardown(range_queries, setup, teardown),
        cmocka_unit_test_setup_teardown(exists_queries, setup, teardown),
        cmocka_unit_test_setup_teardown(bool_combinations, setup, teardown),
        cmocka_unit_test_setup_teardown(minimum_should_match, setup, teardown),
        cmocka_unit_test_setup_teardown(scores, setup, teardown),
        cmocka_unit_test_setup_teardown(sort_orders, setup, teardown),
        cmocka_unit_test_setup_teardown(paging, setup, teardown),
        cmocka_unit_test_setup_teardown(source_filtering, setup, teardown),
        cmocka_unit_test_setup_teardown(credentials_never_returned, setup, teardown),
        cmocka_unit_test_setup_teardown(totals_eq_and_gte, setup, teardown),
        cmocka_unit_test(error_unknown_query),
        cmocka_unit_test(error_bad_sort),
        cmocka_unit_test(error_result_window),
        cmocka_unit_test(error_malformed),
        cmocka_unit_test_setup_teardown(injection_refused_or_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(term_uses_index, setup, teardown),
        cmocka_unit_test_setup_teardown(version_columns_optional, setup, teardown),
        cmocka_unit_test_setup_teardown(limits, setup, teardown),
        cmocka_unit_test_setup_teardown(match_function, setup, teardown),
        cmocka_unit_test(cleanup_is_safe),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
