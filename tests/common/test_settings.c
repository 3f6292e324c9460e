/*
 * test_settings.c — unit tests for common/settings.c: normalising PUT sections (flat and nested
 * keys, canonical values, every refusal with its exact reason), applying change sets, building
 * snapshots (precedence, typed getters, regex matching), rendering and the defaults section.
 *
 * Each cmocka_unit_test() line is registered as its own ctest case and run as `<exe> <name>`.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "common.h"

#define KEY(suffix) "plugins.ml_commons." suffix

/* ------------------------------------------------------------------------------------------ */
/* Helpers                                                                                    */
/* ------------------------------------------------------------------------------------------ */

static struct json_object *parse(const char *text)
{
    struct json_object *o = json_tokener_parse(text);
    if (o == NULL)
        fail_msg("test JSON does not parse: %s", text);
    return o;
}

/* Normalises @text as a section of @scope and returns the layer; fails the test on error. */
static struct json_object *norm_scope(const char *text, const char *scope)
{
    char err[512] = "";
    struct json_object *in = parse(text), *out = NULL;
    int rc = mlr_settings_normalize(in, scope, &out, err, sizeof(err));
    json_object_put(in);
    if (rc != MLR_OK)
        fail_msg("normalize(%s) failed: %s", text, err);
    assert_non_null(out);
    return out;
}

static struct json_object *norm_ok(const char *text)
{
    return norm_scope(text, "persistent");
}

/* Normalises @in (borrowed) and asserts MLR_EINVAL with exactly @want, @out untouched. */
static void norm_err_obj(struct json_object *in, const char *scope, const char *want)
{
    char err[1024] = "";
    struct json_object *sentinel = json_object_new_object();
    struct json_object *out = sentinel;
    int rc = mlr_settings_normalize(in, scope, &out, err, sizeof(err));
    assert_int_equal(rc, MLR_EINVAL);
    assert_ptr_equal(out, sentinel);
    assert_string_equal(err, want);
    json_object_put(sentinel);
}

static void norm_err_scope(const char *text, const char *scope, const char *want)
{
    struct json_object *in = parse(text);
    norm_err_obj(in, scope, want);
    json_object_put(in);
}

static void norm_err(const char *text, const char *want)
{
    norm_err_scope(text, "persistent", want);
}

/* The string value of @key in @layer (fails when absent or not a string). */
static const char *str(struct json_object *layer, const char *key)
{
    struct json_object *v = NULL;
    if (!json_object_object_get_ex(layer, key, &v) || !json_object_is_type(v, json_type_string))
        fail_msg("%s is not a string in %s", key, json_object_to_json_string(layer));
    return json_object_get_string(v);
}

/* Asserts that @got and the JSON text @want are equal as JSON values. */
static void assert_json(struct json_object *got, const char *want)
{
    struct json_object *w = parse(want);
    if (!json_object_equal(got, w))
        fail_msg("got %s, want %s", json_object_to_json_string(got), want);
    json_object_put(w);
}

/* Builds a snapshot from JSON texts (NULL = no layer); fails the test on error. */
static struct mlr_settings *snap(const char *config, const char *persistent, const char *transient)
{
    char err[512] = "";
    struct json_object *c = config ? parse(config) : NULL;
    struct json_object *p = persistent ? parse(persistent) : NULL;
    struct json_object *t = transient ? parse(transient) : NULL;
    struct mlr_settings *s = NULL;
    int rc = mlr_settings_new(c, p, t, &s, err, sizeof(err));
    json_object_put(c);
    json_object_put(p);
    json_object_put(t);
    if (rc != MLR_OK)
        fail_msg("mlr_settings_new failed: %s", err);
    return s;
}

/* Asserts that building a snapshot fails with exactly @want and leaves *out untouched. */
static void snap_err(const char *config, const char *persistent, const char *want)
{
    char err[512] = "";
    struct json_object *c = config ? parse(config) : NULL;
    struct json_object *p = persistent ? parse(persistent) : NULL;
    struct mlr_settings *s = (struct mlr_settings *)&err; /* any non-NULL sentinel */
    int rc = mlr_settings_new(c, p, NULL, &s, err, sizeof(err));
    json_object_put(c);
    json_object_put(p);
    assert_int_equal(rc, MLR_EINVAL);
    assert_ptr_equal(s, (struct mlr_settings *)&err);
    assert_string_equal(err, want);
}

static int match(const struct mlr_settings *s, enum mlr_setting_id id, const char *subject)
{
    return mlr_settings_match(s, id, subject, strlen(subject));
}

/* A persistent section setting the regex list @key to the one regex @re (JSON-escaped). */
static char *regex_section(const char *key, const char *re)
{
    return mlr_xasprintf("{\"%s\": [\"%s\"]}", key, re);
}

static void regex_ok(const char *re)
{
    char *text = regex_section(KEY("trusted_connector_endpoints_regex"), re);
    json_object_put(norm_ok(text));
    free(text);
}

/* Asserts that the regex (as written in JSON) is refused for @why, shown with its JSON
 * unescaping applied as @shown. */
static void regex_refused(const char *re, const char *shown, const char *why)
{
    char *text = regex_section(KEY("trusted_connector_endpoints_regex"), re);
    char *want = mlr_xasprintf("Failed to parse value [%s] for setting "
                               "[plugins.ml_commons.trusted_connector_endpoints_regex]: %s",
                               shown, why);
    norm_err(text, want);
    free(want);
    free(text);
}

/* ------------------------------------------------------------------------------------------ */
/* Normalisation: shapes and canonical values                                                 */
/* ------------------------------------------------------------------------------------------ */

static void flat_and_nested_are_equivalent(void **state)
{
    (void)state;
    struct json_object *flat = norm_ok("{\"plugins.ml_commons.model_auto_deploy.enable\": false,"
                                       " \"plugins.ml_commons.max_model_on_node\": 20}");
    struct json_object *nested = norm_ok("{\"plugins\": {\"ml_commons\": {\"model_auto_deploy\":"
                                         " {\"enable\": false}, \"max_model_on_node\": 20}}}");
    assert_true(json_object_equal(flat, nested));
    assert_json(flat, "{\"plugins.ml_commons.model_auto_deploy.enable\": \"false\","
                      " \"plugins.ml_commons.max_model_on_node\": \"20\"}");
    json_object_put(flat);
    json_object_put(nested);
}

static void mixed_flat_and_nested_keys(void **state)
{
    (void)state;
    struct json_object *l = norm_ok(
        "{\"plugins\": {\"ml_commons.safe_delete_model\": true,"
        "               \"ml_commons\": {\"connector\": {\"private_ip_enabled\": \"true\"}}},"
        " \"plugins.ml_commons.sync_up_job_interval_in_seconds\": 5}");
    assert_json(l, "{\"plugins.ml_commons.safe_delete_model\": \"true\","
                   " \"plugins.ml_commons.connector.private_ip_enabled\": \"true\","
                   " \"plugins.ml_commons.sync_up_job_interval_in_seconds\": \"5\"}");
    json_object_put(l);
}

static void scalar_values_are_canonical_strings(void **state)
{
    (void)state;
    struct json_object *l = norm_ok("{\"plugins.ml_commons.safe_delete_model\": true,"
                                    " \"plugins.ml_commons.max_model_on_node\": 7,"
                                    " \"plugins.ml_commons.model_auto_redeploy_success_ratio\":"
                                    " 0.8,"
                                    " \"plugins.ml_commons.max_ml_task_per_node\": \"10\","
                                    " \"plugins.ml_commons.future_double\": 1.0,"
                                    " \"plugins.ml_commons.future_big\": 18446744073709551615,"
                                    " \"mlrelay.task_retention\": \"3d\"}");
    assert_string_equal(str(l, KEY("safe_delete_model")), "true");
    assert_string_equal(str(l, KEY("max_model_on_node")), "7");
    assert_string_equal(str(l, KEY("model_auto_redeploy_success_ratio")), "0.8");
    assert_string_equal(str(l, KEY("max_ml_task_per_node")), "10");
    assert_string_equal(str(l, KEY("future_double")), "1.0");
    assert_string_equal(str(l, KEY("future_big")), "18446744073709551615");
    assert_string_equal(str(l, "mlrelay.task_retention"), "3d");
    json_object_put(l);
}

static void list_values_are_arrays_of_strings(void **state)
{
    (void)state;
    struct json_object *l =
        norm_ok("{\"plugins.ml_commons.trusted_connector_endpoints_regex\": [\"^https://a/.*$\"],"
                " \"plugins.ml_commons.task_dispatcher.eligible_node_role.remote_model\": \"ml\","
                " \"plugins.ml_commons.future_list\": [1, true, \"x\", 0.5]}");
    assert_json(l, "{\"plugins.ml_commons.trusted_connector_endpoints_regex\":"
                   " [\"^https://a/.*$\"],"
                   " \"plugins.ml_commons.task_dispatcher.eligible_node_role.remote_model\":"
                   " [\"ml\"],"
                   " \"plugins.ml_commons.future_list\": [\"1\", \"true\", \"x\", \"0.5\"]}");
    json_object_put(l);
}

static void list_for_scalar_setting_refused(void **state)
{
    (void)state;
    norm_err("{\"plugins.ml_commons.max_model_on_node\": [1,2]}",
             "Failed to parse value [[1,2]] for setting [plugins.ml_commons.max_model_on_node]");
}

static void list_element_must_be_scalar(void **state)
{
    (void)state;
    norm_err("{\"plugins.ml_commons.remote_job.status_field\": [\"a\", {\"b\": 1}]}",
             "Failed to parse value [{\"b\":1}] for setting "
             "[plugins.ml_commons.remote_job.status_field]: list elements must be strings, "
             "numbers or booleans");
}

static void list_length_is_capped(void **state)
{
    (void)state;
    struct json_object *arr = json_object_new_array();
    struct json_object *in = json_object_new_object();
    for (int i = 0; i < 1025; i++)
        json_object_array_add(arr, json_object_new_string("x"));
    json_object_object_add(in, KEY("remote_job.status_field"), arr);
    norm_err_obj(in, "persistent",
                 "Failed to parse value for setting [plugins.ml_commons.remote_job.status_field]: "
                 "lists are limited to 1024 elements");
    json_object_put(in);
}

static void empty_and_null_sections(void **state)
{
    (void)state;
    char err[64] = "";
    struct json_object *out = NULL;
    struct json_object *l = norm_ok("{}");
    assert_int_equal(json_object_object_length(l), 0);
    json_object_put(l);
    assert_int_equal(mlr_settings_normalize(NULL, "transient", &out, err, sizeof(err)), MLR_OK);
    assert_non_null(out);
    assert_int_equal(json_object_object_length(out), 0);
    json_object_put(out);
}

static void non_object_section_refused(void **state)
{
    (void)state;
    struct json_object *five = json_object_new_int(5);
    norm_err_obj(five, "persistent", "request body [persistent] must be an object");
    norm_err_scope("[1]", "transient", "request body [transient] must be an object");
    json_object_put(five);
}

/* ------------------------------------------------------------------------------------------ */
/* Resets and change sets                                                                     */
/* ------------------------------------------------------------------------------------------ */

static void null_resets_through_layer_apply(void **state)
{
    (void)state;
    struct json_object *layer = norm_ok("{\"plugins.ml_commons.max_model_on_node\": 20,"
                                        " \"plugins.ml_commons.safe_delete_model\": true}");
    struct json_object *changes = norm_ok("{\"plugins\": {\"ml_commons\": {\"max_model_on_node\":"
                                          " null, \"sync_up_job_interval_in_seconds\": 30}}}");
    struct json_object *v = (struct json_object *)&state;
    assert_true(json_object_object_get_ex(changes, KEY("max_model_on_node"), &v));
    assert_null(v); /* a reset is carried as JSON null */

    struct json_object *next = mlr_settings_layer_apply(layer, changes);
    assert_json(next, "{\"plugins.ml_commons.safe_delete_model\": \"true\","
                      " \"plugins.ml_commons.sync_up_job_interval_in_seconds\": \"30\"}");
    /* The input layer is not modified. */
    assert_string_equal(str(layer, KEY("max_model_on_node")), "20");
    json_object_put(next);

    struct json_object *fresh = mlr_settings_layer_apply(NULL, changes);
    assert_json(fresh, "{\"plugins.ml_commons.sync_up_job_interval_in_seconds\": \"30\"}");
    json_object_put(fresh);
    json_object_put(changes);
    json_object_put(layer);
}

/* ------------------------------------------------------------------------------------------ */
/* Refusals with their exact reasons                                                          */
/* ------------------------------------------------------------------------------------------ */

static void bool_errors(void **state)
{
    (void)state;
    norm_err("{\"plugins.ml_commons.safe_delete_model\": \"yes\"}",
             "Failed to parse value [yes] for setting [plugins.ml_commons.safe_delete_model] as "
             "only [true] or [false] are allowed.");
    norm_err("{\"plugins.ml_commons.safe_delete_model\": \"TRUE\"}",
             "Failed to parse value [TRUE] for setting [plugins.ml_commons.safe_delete_model] as "
             "only [true] or [false] are allowed.");
    norm_err("{\"plugins.ml_commons.safe_delete_model\": 1}",
             "Failed to parse value [1] for setting [plugins.ml_commons.safe_delete_model] as "
             "only [true] or [false] are allowed.");
}

static void int_not_a_number(void **state)
{
    (void)state;
    norm_err("{\"plugins.ml_commons.max_model_on_node\": \"ten\"}",
             "Failed to parse value [ten] for setting [plugins.ml_commons.max_model_on_node]");
    norm_err("{\"plugins.ml_commons.max_model_on_node\": 10.5}",
             "Failed to parse value [10.5] for setting [plugins.ml_commons.max_model_on_node]");
    norm_err("{\"plugins.ml_commons.max_model_on_node\": \" 10\"}",
             "Failed to parse value [ 10] for setting [plugins.ml_commons.max_model_on_node]");
    norm_err("{\"plugins.ml_commons.monitoring_request_count\": \"99999999999999999999\"}",
             "Failed to parse value [99999999999999999999] for setting "
             "[plugins.ml_commons.monitoring_request_count]");
}

static void int_out_of_range(void **state)
{
    (void)state;
    norm_err("{\"plugins.ml_commons.max_register_model_tasks_per_node\": 11}",
             "Failed to parse value [11] for setting "
             "[plugins.ml_commons.max_register_model_tasks_per_node] must be <= 10");
    norm_err("{\"plugins.ml_commons.ml_task_timeout_in_seconds\": \"0\"}",
             "Failed to parse value [0] for setting [plugins.ml_commons.ml_task_timeout_in_seconds]"
             " must be >= 1");
    norm_err("{\"plugins.ml_commons.max_json_size\": -2}",
             "Failed to parse value [-2] for setting [plugins.ml_commons.max_json_size] must be "
             ">= -1");
    struct json_object *l = norm_ok("{\"plugins.ml_commons.max_json_size\": -1,"
                                    " \"plugins.ml_commons.max_register_model_tasks_per_node\":"
                                    " 0}");
    assert_string_equal(str(l, KEY("max_json_size")), "-1");
    json_object_put(l);
}

static void double_errors(void **state)
{
    (void)state;
    norm_err("{\"plugins.ml_commons.model_auto_redeploy_success_ratio\": \"most\"}",
             "Failed to parse value [most] for setting "
             "[plugins.ml_commons.model_auto_redeploy_success_ratio]");
    norm_err("{\"plugins.ml_commons.model_auto_redeploy_success_ratio\": \"NaN\"}",
             "Failed to parse value [NaN] for setting "
             "[plugins.ml_commons.model_auto_redeploy_success_ratio]");
    norm_err("{\"plugins.ml_commons.model_auto_redeploy_success_ratio\": 1.5}",
             "Failed to parse value [1.5] for setting "
             "[plugins.ml_commons.model_auto_redeploy_success_ratio] must be <= 1.0");
    norm_err("{\"plugins.ml_commons.model_auto_redeploy_success_ratio\": -0.1}",
             "Failed to parse value [-0.1] for setting "
             "[plugins.ml_commons.model_auto_redeploy_success_ratio] must be >= 0.0");
}

static void time_value_errors(void **state)
{
    (void)state;
    norm_err("{\"mlrelay.task_retention\": 7}",
             "failed to parse setting [mlrelay.task_retention] with value [7] as a time value: "
             "unit is missing or unrecognized");
    norm_err("{\"mlrelay.task_retention\": \"7 weeks\"}",
             "failed to parse setting [mlrelay.task_retention] with value [7 weeks] as a time "
             "value: unit is missing or unrecognized");
    struct json_object *l = norm_ok("{\"mlrelay\": {\"task_retention\": \"36h\"}}");
    assert_string_equal(str(l, "mlrelay.task_retention"), "36h");
    json_object_put(l);
}

static void unknown_ml_commons_key_accepted(void **state)
{
    (void)state;
    struct json_object *l = norm_scope("{\"plugins\": {\"ml_commons\": {\"some_future_flag\": true,"
                                       " \"rag_pipeline_feature_enabled\": \"false\"}}}",
                                       "transient");
    assert_string_equal(str(l, KEY("some_future_flag")), "true");
    assert_string_equal(str(l, KEY("rag_pipeline_feature_enabled")), "false");
    json_object_put(l);
}

static void unknown_other_key_refused(void **state)
{
    (void)state;
    norm_err("{\"cluster.routing.allocation.enable\": \"all\"}",
             "persistent setting [cluster.routing.allocation.enable], not recognized");
    norm_err_scope("{\"cluster\": {\"routing\": {\"x\": 1}}}", "transient",
                   "transient setting [cluster.routing.x], not recognized");
    norm_err("{\"mlrelay.task_retentoin\": \"1d\"}",
             "persistent setting [mlrelay.task_retentoin], not recognized");
}

static void static_key_refused(void **state)
{
    (void)state;
    norm_err("{\"plugins.ml_commons.master_key_cache_ttl_minutes\": 10}",
             "final persistent setting [plugins.ml_commons.master_key_cache_ttl_minutes], not "
             "updateable");
    norm_err_scope("{\"plugins.ml_commons.connector.restricted_ip_patterns\": null}", "transient",
                   "final transient setting [plugins.ml_commons.connector.restricted_ip_patterns],"
                   " not updateable");
}

static void bad_keys_refused(void **state)
{
    (void)state;
    norm_err("{\"plugins..ml_commons.x\": \"1\"}",
             "setting key [plugins..ml_commons.x] must not be empty or contain empty segments");
    norm_err("{\"\": \"1\"}", "setting key [] must not be empty or contain empty segments");
    norm_err("{\"plugins.ml_commons.x.\": \"1\"}",
             "setting key [plugins.ml_commons.x.] must not be empty or contain empty segments");
    norm_err("{\"plugins\": {\"\": {\"x\": 1}}}",
             "setting key [plugins..x] must not be empty or contain empty segments");
}

static void nul_in_value_refused(void **state)
{
    (void)state;
    norm_err("{\"plugins.ml_commons.future\": \"a\\u0000b\"}",
             "Failed to parse value for setting [plugins.ml_commons.future]: values must not "
             "contain NUL characters");
}

static void duplicate_key_refused(void **state)
{
    (void)state;
    norm_err("{\"plugins.ml_commons.safe_delete_model\": true,"
             " \"plugins\": {\"ml_commons\": {\"safe_delete_model\": false}}}",
             "duplicate settings key [plugins.ml_commons.safe_delete_model] found");
}

static void key_length_is_capped(void **state)
{
    (void)state;
    char key[1100];
    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    memcpy(key, "plugins.ml_commons.", strlen("plugins.ml_commons."));
    struct json_object *in = json_object_new_object();
    json_object_object_add(in, key, json_object_new_string("1"));
    char err[256] = "";
    struct json_object *out = NULL;
    assert_int_equal(mlr_settings_normalize(in, "persistent", &out, err, sizeof(err)), MLR_EINVAL);
    assert_null(out);
    assert_non_null(strstr(err, "is longer than 1024 bytes"));
    json_object_put(in);
}

/* Builds {"plugins": {"ml_commons": {"a": {"a": ... {"leaf": "1"}}}}} with @levels objects,
 * the section itself included. */
static struct json_object *nested(int levels)
{
    struct json_object *obj = json_object_new_object();
    json_object_object_add(obj, "leaf", json_object_new_string("1"));
    for (int level = levels; level > 1; level--) {
        struct json_object *parent = json_object_new_object();
        const char *name = level == 2 ? "plugins" : level == 3 ? "ml_commons" : "a";
        json_object_object_add(parent, name, obj); /* consumes obj */
        obj = parent;
    }
    return obj;
}

static void nesting_depth_is_capped(void **state)
{
    (void)state;
    char err[256] = "";
    struct json_object *ok = nested(32), *deep = nested(33), *out = NULL;
    assert_int_equal(mlr_settings_normalize(ok, "persistent", &out, err, sizeof(err)), MLR_OK);
    assert_int_equal(json_object_object_length(out), 1);
    json_object_put(out);
    out = NULL;
    assert_int_equal(mlr_settings_normalize(deep, "persistent", &out, err, sizeof(err)),
                     MLR_EINVAL);
    assert_null(out);
    assert_non_null(strstr(err, "is nested more than 32 levels deep"));
    assert_int_equal(strncmp(err, "setting [plugins.ml_commons.a.a.", 32), 0);
    json_object_put(ok);
    json_object_put(deep);
}

/* ------------------------------------------------------------------------------------------ */
/* Regex checks                                                                               */
/* ------------------------------------------------------------------------------------------ */

static void regex_invalid_refused(void **state)
{
    (void)state;
    regex_refused("^https://(foo", "^https://(foo",
                  "missing closing parenthesis at offset 13");
    norm_err("{\"plugins.ml_commons.remote_job.status_regex.failed\": \"[a-\"}",
             "Failed to parse value [[a-] for setting "
             "[plugins.ml_commons.remote_job.status_regex.failed]: missing terminating ] for "
             "character class at offset 3");
}

static void regex_too_long_refused(void **state)
{
    (void)state;
    char re[258];
    memset(re, 'a', 257);
    re[257] = '\0';
    regex_refused(re, re, "regex is longer than 256 characters");
    re[256] = '\0';
    regex_ok(re);

    /* The limit counts characters, not bytes: 256 two-byte characters pass. */
    char wide[2 * 257 + 1] = "";
    for (int i = 0; i < 256; i++)
        strcat(wide, "\xc3\xa9");
    regex_ok(wide);
    strcat(wide, "\xc3\xa9");
    regex_refused(wide, wide, "regex is longer than 256 characters");
}

static void regex_backreference_refused(void **state)
{
    (void)state;
    const char *why = "back-references are not allowed";
    regex_refused("(a)\\\\1", "(a)\\1", why);
    regex_refused("(?<n>a)\\\\k<n>", "(?<n>a)\\k<n>", why);
    regex_refused("(a)\\\\g1", "(a)\\g1", why);
    regex_refused("(?P<n>a)(?P=n)", "(?P<n>a)(?P=n)", why);
    /* Inside a character class \1 is an octal escape, not a reference. */
    regex_ok("^[\\\\1a]+$");
}

static void regex_nested_quantifier_refused(void **state)
{
    (void)state;
    const char *why = "nested quantifiers are not allowed";
    regex_refused("(a+)+", "(a+)+", why);
    regex_refused("(a*)*", "(a*)*", why);
    regex_refused("^https://((a+)b)*$", "^https://((a+)b)*$", why);
    regex_refused("(a?)+", "(a?)+", why);
    regex_refused("(?:x|y+){2,}", "(?:x|y+){2,}", why);
    regex_refused("(\\\\w+\\\\.){1,5}", "(\\w+\\.){1,5}", why);
    regex_refused("(?x)(a+) +", "(?x)(a+) +", "the extended-syntax option (?x) is not allowed");
    regex_refused("(a|(?R))", "(a|(?R))", "recursive group calls are not allowed");
}

static void regex_valid_accepted(void **state)
{
    (void)state;
    regex_ok("^https://(www\\\\.)?example\\\\.com/.*$");
    regex_ok("^https://([a-z]+\\\\.)?example\\\\.com/.*$"); /* `?` cannot repeat the group */
    regex_ok("(ab)+c{2}");
    regex_ok("[(a+)]+");       /* the parentheses are literal inside a class */
    regex_ok("\\\\(a+\\\\)+"); /* escaped parentheses are literals too */
    regex_ok("[[:alpha:]]+(x){3}");
    struct json_object *l = norm_ok("{\"plugins.ml_commons.remote_job.status_regex.completed\":"
                                    " \"(done|finished)\"}");
    assert_string_equal(str(l, KEY("remote_job.status_regex.completed")), "(done|finished)");
    json_object_put(l);
}

/* ------------------------------------------------------------------------------------------ */
/* Snapshots                                                                                  */
/* ------------------------------------------------------------------------------------------ */

static void defaults_without_layers(void **state)
{
    (void)state;
    struct mlr_settings *s = snap(NULL, NULL, NULL);
    assert_false(mlr_settings_bool(s, MLR_S_PRIVATE_IP_ENABLED));
    assert_true(mlr_settings_bool(s, MLR_S_REMOTE_INFERENCE_ENABLED));
    assert_int_equal(mlr_settings_int(s, MLR_S_SYNC_UP_INTERVAL), 10);
    assert_int_equal(mlr_settings_int(s, MLR_S_TASK_TIMEOUT), 600);
    assert_int_equal(mlr_settings_int(s, MLR_S_MAX_BATCH_TASKS), 100);
    assert_int_equal(mlr_settings_int(s, MLR_S_MAX_JSON_SIZE), 100000000);
    assert_int_equal(mlr_settings_int(s, MLR_S_MASTER_KEY_CACHE_TTL), 5);
    assert_true(mlr_settings_double(s, MLR_S_AUTO_REDEPLOY_RATIO) == 0.8);
    assert_int_equal(mlr_settings_time_ms(s, MLR_S_TASK_RETENTION), 7LL * 24 * 3600 * 1000);
    assert_int_equal(json_object_object_length(mlr_settings_config(s)), 0);
    assert_int_equal(json_object_object_length(mlr_settings_persistent(s)), 0);
    assert_int_equal(json_object_object_length(mlr_settings_transient(s)), 0);
    mlr_settings_unref(s);
}

static void precedence_transient_persistent_config_default(void **state)
{
    (void)state;
    const char *cfg = "{\"plugins.ml_commons.max_model_on_node\": 1,"
                      " \"plugins.ml_commons.safe_delete_model\": true,"
                      " \"plugins.ml_commons.model_auto_redeploy_success_ratio\": 0.5}";
    const char *per = "{\"plugins.ml_commons.max_model_on_node\": \"2\","
                      " \"plugins.ml_commons.model_auto_redeploy_success_ratio\": \"0.6\"}";
    const char *tra = "{\"plugins\": {\"ml_commons\": {\"max_model_on_node\": 3}}}";
    struct mlr_settings *all = snap(cfg, per, tra), *pc = snap(cfg, per, NULL);
    struct mlr_settings *c = snap(cfg, NULL, NULL), *none = snap(NULL, NULL, NULL);
    assert_int_equal(mlr_settings_int(all, MLR_S_MAX_MODEL_ON_NODE), 3);
    assert_int_equal(mlr_settings_int(pc, MLR_S_MAX_MODEL_ON_NODE), 2);
    assert_int_equal(mlr_settings_int(c, MLR_S_MAX_MODEL_ON_NODE), 1);
    assert_int_equal(mlr_settings_int(none, MLR_S_MAX_MODEL_ON_NODE), 10);
    assert_true(mlr_settings_double(all, MLR_S_AUTO_REDEPLOY_RATIO) == 0.6);
    assert_true(mlr_settings_double(c, MLR_S_AUTO_REDEPLOY_RATIO) == 0.5);
    assert_true(mlr_settings_bool(all, MLR_S_SAFE_DELETE_MODEL));
    assert_false(mlr_settings_bool(none, MLR_S_SAFE_DELETE_MODEL));
    /* The snapshot keeps normalised copies of its layers. */
    assert_string_equal(str(mlr_settings_config(all), KEY("max_model_on_node")), "1");
    assert_string_equal(str(mlr_settings_transient(all), KEY("max_model_on_node")), "3");
    assert_string_equal(str(mlr_settings_persistent(all), KEY("max_model_on_node")), "2");
    mlr_settings_unref(all);
    mlr_settings_unref(pc);
    mlr_settings_unref(c);
    mlr_settings_unref(none);
}

static void time_setting_in_milliseconds(void **state)
{
    (void)state;
    struct mlr_settings *s = snap("{\"mlrelay.task_retention\": \"2d\"}",
                                  "{\"mlrelay.task_retention\": \"12h\"}", NULL);
    assert_int_equal(mlr_settings_time_ms(s, MLR_S_TASK_RETENTION), 12LL * 3600 * 1000);
    mlr_settings_unref(s);
    s = snap(NULL, NULL, "{\"mlrelay.task_retention\": \"0\"}");
    assert_int_equal(mlr_settings_time_ms(s, MLR_S_TASK_RETENTION), 0);
    mlr_settings_unref(s);
}

static void bad_layer_refused_by_new(void **state)
{
    (void)state;
    snap_err("{\"plugins.ml_commons.max_deploy_model_tasks_per_node\": 50}", NULL,
             "Failed to parse value [50] for setting "
             "[plugins.ml_commons.max_deploy_model_tasks_per_node] must be <= 10");
    snap_err("{\"mlrelay.bogus\": 1}", NULL, "config setting [mlrelay.bogus], not recognized");
    snap_err(NULL, "{\"cluster.x\": \"1\"}", "persistent setting [cluster.x], not recognized");
    snap_err(NULL, "{\"plugins.ml_commons.trusted_connector_endpoints_regex\": [\"(a+)+\"]}",
             "Failed to parse value [(a+)+] for setting "
             "[plugins.ml_commons.trusted_connector_endpoints_regex]: nested quantifiers are not "
             "allowed");
}

static void config_allows_static_and_skips_node_keys(void **state)
{
    (void)state;
    struct mlr_settings *s = snap("{\"plugins.ml_commons.master_key_cache_ttl_minutes\": 30,"
                                  " \"plugins.ml_commons.connector.restricted_ip_patterns\":"
                                  " [\"^10\\\\..*$\"],"
                                  " \"http.max_content_length\": \"10mb\","
                                  " \"workers\": {\"threads\": 4}}",
                                  NULL, NULL);
    assert_int_equal(mlr_settings_int(s, MLR_S_MASTER_KEY_CACHE_TTL), 30);
    assert_int_equal(match(s, MLR_S_RESTRICTED_IP_PATTERNS, "10.1.2.3"), 1);
    assert_int_equal(match(s, MLR_S_RESTRICTED_IP_PATTERNS, "192.168.0.1"), 0);
    assert_json(mlr_settings_config(s),
                "{\"plugins.ml_commons.master_key_cache_ttl_minutes\": \"30\","
                " \"plugins.ml_commons.connector.restricted_ip_patterns\": [\"^10\\\\..*$\"]}");
    mlr_settings_unref(s);
}

/* What api/config.c does with the cluster keys of the config file. */
static void config_scope_normalize(void **state)
{
    (void)state;
    struct json_object *l = norm_scope("{\"plugins.ml_commons.master_key_cache_ttl_minutes\": 30,"
                                       " \"http.max_connections\": 10}",
                                       "config");
    assert_json(l, "{\"plugins.ml_commons.master_key_cache_ttl_minutes\": \"30\"}");
    json_object_put(l);
    norm_err_scope("{\"plugins.ml_commons.master_key_cache_ttl_minutes\": 0}", "config",
                   "Failed to parse value [0] for setting "
                   "[plugins.ml_commons.master_key_cache_ttl_minutes] must be >= 1");
    norm_err_scope("{\"mlrelay.nope\": 1}", "config",
                   "config setting [mlrelay.nope], not recognized");
}

static void match_default_trusted_endpoints(void **state)
{
    (void)state;
    struct mlr_settings *s = snap(NULL, NULL, NULL);
    const enum mlr_setting_id t = MLR_S_TRUSTED_ENDPOINTS;
    assert_int_equal(match(s, t, "https://api.openai.com/v1/chat/completions"), 1);
    assert_int_equal(match(s, t, "https://api.openai.com/v1/batches/${parameters.id}"), 1);
    assert_int_equal(match(s, t, "https://api.openai.com.evil.com/x"), 0);
    assert_int_equal(match(s, t, "http://api.openai.com/x"), 0);
    assert_int_equal(match(s, t, "xhttps://api.openai.com/x"), 0);
    assert_int_equal(match(s, t, "https://runtime.sagemaker.us-east-1.amazonaws.com/e/x"), 1);
    assert_int_equal(match(s, t, "https://bedrock-runtime.us-west-2.amazonaws.com/model/x/invoke"),
                     1);
    assert_int_equal(match(s, t, "https://rekognition-fips.us-east-1.amazonaws.com"), 1);
    assert_int_equal(match(s, t, "https://textract.us-east-1.amazonaws.com"), 1);
    assert_int_equal(match(s, t, "https://textract.us-east-1.amazonaws.com/x"), 0);
    assert_int_equal(match(s, t, ""), 0);
    /* Invalid UTF-8 in the subject fails closed. */
    assert_int_equal(match(s, t, "https://api.openai.com/\xff"), 0);
    assert_int_equal(mlr_settings_list_len(s, t), 12);
    /* The private allow-list is empty by default: nothing matches. */
    assert_int_equal(mlr_settings_list_len(s, MLR_S_TRUSTED_PRIVATE_ENDPOINTS), 0);
    assert_int_equal(match(s, MLR_S_TRUSTED_PRIVATE_ENDPOINTS, "https://10.0.0.1/x"), 0);
    mlr_settings_unref(s);
}

static void match_is_a_full_match(void **state)
{
    (void)state;
    struct mlr_settings *s =
        snap(NULL, "{\"plugins.ml_commons.trusted_connector_endpoints_regex\":"
                   " [\"api\\\\.example\\\\.com\", \"a|ab\"]}", NULL);
    const enum mlr_setting_id t = MLR_S_TRUSTED_ENDPOINTS;
    assert_int_equal(match(s, t, "api.example.com"), 1);
    assert_int_equal(match(s, t, "https://api.example.com/x"), 0); /* not a substring search */
    assert_int_equal(match(s, t, "api.example.com/"), 0);
    assert_int_equal(match(s, t, "xapi.example.com"), 0);
    assert_int_equal(match(s, t, "ab"), 1); /* backtracks into the second alternative */
    assert_int_equal(match(s, t, "https://api.openai.com/x"), 0); /* the defaults are replaced */
    /* @len bounds the subject. */
    assert_int_equal(mlr_settings_match(s, t, "api.example.comXYZ", 15), 1);
    assert_int_equal(mlr_settings_match(s, t, "api.example.comXYZ", 16), 0);
    mlr_settings_unref(s);
}

static void match_status_regex(void **state)
{
    (void)state;
    struct mlr_settings *s =
        snap(NULL, NULL, "{\"plugins.ml_commons.remote_job.status_regex.failed\": \"(error|x+)\"}");
    assert_int_equal(match(s, MLR_S_REMOTE_JOB_COMPLETED, "completed"), 1);
    assert_int_equal(match(s, MLR_S_REMOTE_JOB_COMPLETED, "partiallyCompleted"), 1);
    /* ML Commons compiles these CASE_INSENSITIVE and tests them with Matcher.find()
     * (GetTaskTransportAction), so they match anywhere and in any case, unlike the URL lists. */
    assert_int_equal(match(s, MLR_S_REMOTE_JOB_COMPLETED, "completedx"), 1);
    assert_int_equal(match(s, MLR_S_REMOTE_JOB_COMPLETED, "Completed"), 1);
    assert_int_equal(match(s, MLR_S_REMOTE_JOB_COMPLETED, "in_progress"), 0);
    assert_int_equal(match(s, MLR_S_REMOTE_JOB_CANCELLING, "Stopping"), 1);
    assert_int_equal(match(s, MLR_S_REMOTE_JOB_CANCELLED, "stopped"), 1);
    assert_int_equal(match(s, MLR_S_REMOTE_JOB_FAILED, "xxx"), 1);
    assert_int_equal(match(s, MLR_S_REMOTE_JOB_FAILED, "failed"), 0);
    mlr_settings_unref(s);
}

static void refcounting(void **state)
{
    (void)state;
    struct mlr_settings *s = snap(NULL, "{\"plugins.ml_commons.max_model_on_node\": 4}", NULL);
    assert_ptr_equal(mlr_settings_ref(s), s);
    assert_ptr_equal(mlr_settings_ref(s), s);
    mlr_settings_unref(s);
    mlr_settings_unref(s);
    /* One reference is left: the snapshot is still whole (ASan would flag a use after free). */
    assert_int_equal(mlr_settings_int(s, MLR_S_MAX_MODEL_ON_NODE), 4);
    assert_int_equal(match(s, MLR_S_TRUSTED_ENDPOINTS, "https://api.cohere.ai/v1/embed"), 1);
    mlr_settings_unref(s); /* the last one frees it; LSan reports a leak otherwise */
    mlr_settings_unref(NULL);
}

struct reader {
    struct mlr_settings *s; /* one reference, owned by the thread */
    int hits;
};

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    for (int i = 0; i < 2000; i++) {
        struct mlr_settings *mine = mlr_settings_ref(r->s);
        r->hits += match(mine, MLR_S_TRUSTED_ENDPOINTS, "https://api.openai.com/v1/embeddings");
        r->hits += match(mine, MLR_S_TRUSTED_ENDPOINTS, "https://evil.example.com/");
        mlr_settings_unref(mine);
    }
    mlr_settings_unref(r->s);
    return NULL;
}

/* Threads share one snapshot: each matches concurrently and drops its own reference; whichever
 * drops the last one frees it (run under TSan/ASan to check). */
static void concurrent_readers(void **state)
{
    (void)state;
    struct mlr_settings *s = snap(NULL, NULL, NULL);
    pthread_t threads[4];
    struct reader readers[4];
    for (int i = 0; i < 4; i++) {
        readers[i].s = mlr_settings_ref(s);
        readers[i].hits = 0;
        assert_int_equal(pthread_create(&threads[i], NULL, reader_main, &readers[i]), 0);
    }
    mlr_settings_unref(s); /* the threads hold the remaining references */
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(threads[i], NULL), 0);
        assert_int_equal(readers[i].hits, 2000);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Rendering and defaults                                                                     */
/* ------------------------------------------------------------------------------------------ */

static void render_nested_and_flat(void **state)
{
    (void)state;
    struct json_object *l = norm_ok("{\"plugins.ml_commons.connector_access_control_enabled\":"
                                    " true,"
                                    " \"plugins.ml_commons.remote_job.status_field\": [\"s\"],"
                                    " \"plugins.ml_commons.remote_job.status_regex.failed\": \"f\","
                                    " \"mlrelay.task_retention\": \"1d\"}");
    struct json_object *nested_out = mlr_settings_render(l, 0);
    struct json_object *flat_out = mlr_settings_render(l, 1);
    assert_json(nested_out,
                "{\"mlrelay\": {\"task_retention\": \"1d\"},"
                " \"plugins\": {\"ml_commons\": {\"connector_access_control_enabled\": \"true\","
                "   \"remote_job\": {\"status_field\": [\"s\"],"
                "                  \"status_regex\": {\"failed\": \"f\"}}}}}");
    assert_true(json_object_equal(flat_out, l));
    /* Keys come out sorted, as OpenSearch prints them. */
    assert_string_equal(json_object_to_json_string_ext(flat_out, JSON_C_TO_STRING_PLAIN),
                        "{\"mlrelay.task_retention\":\"1d\","
                        "\"plugins.ml_commons.connector_access_control_enabled\":\"true\","
                        "\"plugins.ml_commons.remote_job.status_field\":[\"s\"],"
                        "\"plugins.ml_commons.remote_job.status_regex.failed\":\"f\"}");
    json_object_put(nested_out);
    json_object_put(flat_out);
    struct json_object *empty = mlr_settings_render(NULL, 0);
    assert_json(empty, "{}");
    json_object_put(empty);
    json_object_put(l);
}

static void render_keeps_conflicting_keys_flat(void **state)
{
    (void)state;
    struct json_object *l = norm_ok("{\"plugins.ml_commons.foo.bar.baz\": \"3\","
                                    " \"plugins.ml_commons.foo\": \"1\","
                                    " \"plugins.ml_commons.foo.bar\": \"2\","
                                    " \"plugins.ml_commons.other.x\": \"4\","
                                    " \"plugins.ml_commons.max_model_on_node\": null}");
    struct json_object *out = mlr_settings_render(l, 0);
    assert_json(out, "{\"plugins\": {\"ml_commons\": {\"foo\": \"1\", \"foo.bar\": \"2\","
                     " \"foo.bar.baz\": \"3\", \"other\": {\"x\": \"4\"},"
                     " \"max_model_on_node\": null}}}");
    json_object_put(out);
    json_object_put(l);
}

static void defaults_section(void **state)
{
    (void)state;
    struct mlr_settings *s = snap("{\"plugins.ml_commons.max_model_on_node\": 42,"
                                  " \"plugins.ml_commons.safe_delete_model\": true}",
                                  "{\"plugins.ml_commons.safe_delete_model\": false}",
                                  "{\"mlrelay.task_retention\": \"1d\"}");
    struct json_object *d = mlr_settings_defaults(s);
    struct json_object *v = NULL;
    assert_int_equal(json_object_object_length(d), MLR_S__COUNT - 2);
    assert_false(json_object_object_get_ex(d, KEY("safe_delete_model"), NULL));
    assert_false(json_object_object_get_ex(d, "mlrelay.task_retention", NULL));
    assert_string_equal(str(d, KEY("max_model_on_node")), "42"); /* the config value */
    assert_string_equal(str(d, KEY("sync_up_job_interval_in_seconds")), "10");
    assert_string_equal(str(d, KEY("model_auto_redeploy_success_ratio")), "0.8");
    assert_true(json_object_object_get_ex(d, KEY("trusted_connector_endpoints_regex"), &v));
    assert_int_equal(json_object_array_length(v), 12);
    assert_string_equal(json_object_get_string(json_object_array_get_idx(v, 2)),
                        "^https://api\\.openai\\.com/.*$");
    assert_true(json_object_object_get_ex(d, KEY("connector.restricted_ip_patterns"), &v));
    assert_true(json_object_is_type(v, json_type_array));
    assert_int_equal(json_object_array_length(v), 0);
    assert_true(json_object_object_get_ex(d, KEY("task_dispatcher.eligible_node_role.remote_model"),
                                          &v));
    assert_json(v, "[\"data\", \"ml\"]");
    json_object_put(d);
    mlr_settings_unref(s);
}

static void registry_keys_are_unique_and_valid(void **state)
{
    (void)state;
    for (int i = 0; i < MLR_S__COUNT; i++) {
        const char *k = mlr_settings_key((enum mlr_setting_id)i);
        assert_non_null(k);
        assert_true(strncmp(k, "plugins.ml_commons.", 19) == 0 ||
                    strncmp(k, "mlrelay.", 8) == 0); /* our own settings */
        for (int j = 0; j < i; j++)
            assert_string_not_equal(k, mlr_settings_key((enum mlr_setting_id)j));
    }
    assert_string_equal(mlr_settings_key(MLR_S_TRUSTED_ENDPOINTS),
                        "plugins.ml_commons.trusted_connector_endpoints_regex");
    assert_string_equal(mlr_settings_key(MLR_S_TASK_RETENTION), "mlrelay.task_retention");
    /* Every built-in default passes its own validation when fed back in as a config layer. */
    struct mlr_settings *s = snap(NULL, NULL, NULL), *again = NULL;
    struct json_object *d = mlr_settings_defaults(s);
    char err[256] = "";
    assert_int_equal(mlr_settings_new(d, NULL, NULL, &again, err, sizeof(err)), MLR_OK);
    assert_true(json_object_equal(mlr_settings_config(again), d));
    mlr_settings_unref(again);
    json_object_put(d);
    mlr_settings_unref(s);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(flat_and_nested_are_equivalent),
        cmocka_unit_test(mixed_flat_and_nested_keys),
        cmocka_unit_test(scalar_values_are_canonical_strings),
        cmocka_unit_test(list_values_are_arrays_of_strings),
        cmocka_unit_test(list_for_scalar_setting_refused),
        cmocka_unit_test(list_element_must_be_scalar),
        cmocka_unit_test(list_length_is_capped),
        cmocka_unit_test(empty_and_null_sections),
        cmocka_unit_test(non_object_section_refused),
        cmocka_unit_test(null_resets_through_layer_apply),
        cmocka_unit_test(bool_errors),
        cmocka_unit_test(int_not_a_number),
        cmocka_unit_test(int_out_of_range),
        cmocka_unit_test(double_errors),
        cmocka_unit_test(time_value_errors),
        cmocka_unit_test(unknown_ml_commons_key_accepted),
        cmocka_unit_test(unknown_other_key_refused),
        cmocka_unit_test(static_key_refused),
        cmocka_unit_test(bad_keys_refused),
        cmocka_unit_test(nul_in_value_refused),
        cmocka_unit_test(duplicate_key_refused),
        cmocka_unit_test(key_length_is_capped),
        cmocka_unit_test(nesting_depth_is_capped),
        cmocka_unit_test(regex_invalid_refused),
        cmocka_unit_test(regex_too_long_refused),
        cmocka_unit_test(regex_backreference_refused),
        cmocka_unit_test(regex_nested_quantifier_refused),
        cmocka_unit_test(regex_valid_accepted),
        cmocka_unit_test(defaults_without_layers),
        cmocka_unit_test(precedence_transient_persistent_config_default),
        cmocka_unit_test(time_setting_in_milliseconds),
        cmocka_unit_test(bad_layer_refused_by_new),
        cmocka_unit_test(config_allows_static_and_skips_node_keys),
        cmocka_unit_test(config_scope_normalize),
        cmocka_unit_test(match_default_trusted_endpoints),
        cmocka_unit_test(match_is_a_full_match),
        cmocka_unit_test(match_status_regex),
        cmocka_unit_test(refcounting),
        cmocka_unit_test(concurrent_readers),
        cmocka_unit_test(render_nested_and_flat),
        cmocka_unit_test(render_keeps_conflicting_keys_flat),
        cmocka_unit_test(defaults_section),
        cmocka_unit_test(registry_keys_are_unique_and_valid),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
