/*
 * test_batch_predict.c — unit tests for the pure parts of workers/batch_predict.c and
 * workers/poller.c: the
 * status and cancel actions synthesised from a connector's batch_predict action (SageMaker,
 * OpenAI, Cohere, Bedrock, unknown providers, a connector's own actions winning), the parameter
 * map of a status call (TransformJobName from the ARN, percent-encoded processedJobArn, string
 * members only), and the mapping of provider statuses to task states by the default settings.
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

static struct json_object *connector_with(const char *url, const char *extra_action)
{
    char text[2048];
    snprintf(text, sizeof(text),
             "{\"parameters\":{\"region\":\"us-east-1\",\"host\":\"api.openai.com\"},"
             "\"actions\":[{\"action_type\":\"BATCH_PREDICT\",\"method\":\"POST\",\"url\":\"%s\","
             "\"headers\":{\"Authorization\":\"Bearer ${credential.key}\"},"
             "\"request_body\":\"{}\"}%s%s]}",
             url, extra_action ? "," : "", extra_action ? extra_action : "");
    struct json_object *c = json_tokener_parse(text);
    assert_non_null(c);
    return c;
}

static const char *str(struct json_object *o, const char *k)
{
    struct json_object *v = NULL;
    return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : NULL;
}

/* Synthesises @type for a connector whose batch URL is @url and checks method, URL and body. */
static void expect_action(const char *url, const char *type, const char *method,
                          const char *want_url, const char *want_body)
{
    struct json_object *c = connector_with(url, NULL), *a = NULL;
    struct workers_error e;
    assert_int_equal(workers_batch_action(c, type, &a, &e), MLR_OK);
    assert_string_equal(str(a, "action_type"), type);
    assert_string_equal(str(a, "method"), method);
    assert_string_equal(str(a, "url"), want_url);
    if (want_body)
        assert_string_equal(str(a, "request_body"), want_body);
    else
        assert_null(str(a, "request_body"));
    struct json_object *h = NULL;
    assert_true(json_object_object_get_ex(a, "headers", &h));
    assert_string_equal(str(h, "Authorization"), "Bearer ${credential.key}");
    json_object_put(a);
    json_object_put(c);
}

static void synth_sagemaker(void **state)
{
    (void)state;
    const char *body = "{ \"TransformJobName\" : \"${parameters.TransformJobName}\"}";
    expect_action("https://api.sagemaker.${parameters.region}.amazonaws.com/CreateTransformJob",
                  "BATCH_PREDICT_STATUS", "POST",
                  "https://api.sagemaker.us-east-1.amazonaws.com/DescribeTransformJob", body);
    expect_action("https://api.sagemaker.us-east-1.amazonaws.com/CreateTransformJob",
                  "CANCEL_BATCH_PREDICT", "POST",
                  "https://api.sagemaker.us-east-1.amazonaws.com/StopTransformJob", body);
}

static void synth_openai_cohere(void **state)
{
    (void)state;
    expect_action("https://${parameters.host}/v1/batches", "BATCH_PREDICT_STATUS", "GET",
                  "https://api.openai.com/v1/batches/${parameters.id}", NULL);
    expect_action("https://api.openai.com/v1/batches", "CANCEL_BATCH_PREDICT", "POST",
                  "https://api.openai.com/v1/batches/${parameters.id}/cancel", NULL);
    expect_action("https://api.cohere.ai/v1/embed-jobs", "BATCH_PREDICT_STATUS", "GET",
                  "https://api.cohere.ai/v1/embed-jobs/${parameters.id}", NULL);
    expect_action("https://api.cohere.ai/v1/embed-jobs", "CANCEL_BATCH_PREDICT", "POST",
                  "https://api.cohere.ai/v1/embed-jobs/${parameters.id}/cancel", NULL);
}

static void synth_bedrock(void **state)
{
    (void)state;
    const char *url = "https://bedrock.${parameters.region}.amazonaws.com/model-invocation-job";
    expect_action(url, "BATCH_PREDICT_STATUS", "GET",
                  "https://bedrock.us-east-1.amazonaws.com/model-invocation-job/"
                  "${parameters.processedJobArn}",
                  NULL);
    expect_action(url, "CANCEL_BATCH_PREDICT", "POST",
                  "https://bedrock.us-east-1.amazonaws.com/model-invocation-job/"
                  "${parameters.processedJobArn}/stop",
                  NULL);
}

/* The first provider name in ML Commons' order wins: a SageMaker URL that mentions openai. */
static void synth_provider_order(void **state)
{
    (void)state;
    expect_action("https://api.sagemaker.us-east-1.amazonaws.com/openai/CreateTransformJob",
                  "BATCH_PREDICT_STATUS", "POST",
                  "https://api.sagemaker.us-east-1.amazonaws.com/openai/DescribeTransformJob",
                  "{ \"TransformJobName\" : \"${parameters.TransformJobName}\"}");
}

static void synth_unknown_provider(void **state)
{
    (void)state;
    struct json_object *c = connector_with("https://example.com/jobs", NULL), *a = NULL;
    struct workers_error e;
    assert_int_equal(workers_batch_action(c, "BATCH_PREDICT_STATUS", &a, &e), MLR_EINVAL);
    assert_int_equal(e.status, 400);
    assert_string_equal(e.reason, "Please configure the action type to get the batch job "
                                  "details in the connector");
    assert_int_equal(workers_batch_action(c, "CANCEL_BATCH_PREDICT", &a, &e), MLR_EINVAL);
    assert_string_equal(e.reason, "Please configure the action type to cancel the batch job in "
                                  "the connector");
    assert_null(a);
    json_object_put(c);
}

static void own_action_wins(void **state)
{
    (void)state;
    struct json_object *c = connector_with(
        "https://api.openai.com/v1/batches",
        "{\"action_type\":\"BATCH_PREDICT_STATUS\",\"method\":\"GET\",\"url\":\"https://x/y\"}");
    struct json_object *a = NULL;
    struct workers_error e;
    assert_int_equal(workers_batch_action(c, "BATCH_PREDICT_STATUS", &a, &e), MLR_OK);
    assert_string_equal(str(a, "url"), "https://x/y");
    json_object_put(a);
    json_object_put(c);
}

static void no_batch_action(void **state)
{
    (void)state;
    struct json_object *c = json_tokener_parse("{\"actions\":[{\"action_type\":\"PREDICT\","
                                               "\"method\":\"POST\",\"url\":\"https://x\"}]}");
    struct json_object *a = NULL;
    struct workers_error e;
    assert_int_equal(workers_batch_action(c, "BATCH_PREDICT_STATUS", &a, &e), MLR_EINVAL);
    assert_string_equal(e.reason, "no BATCH_PREDICT action found");
    json_object_put(c);
}

static void status_params(void **state)
{
    (void)state;
    struct json_object *req = json_tokener_parse("{\"id\":\"mine\",\"n\":3}");
    struct json_object *rj = json_tokener_parse(
        "{\"id\":\"batch_1\",\"num_of_retries\":2,\"dlq\":{\"bucket\":\"b\"},"
        "\"TransformJobArn\":\"arn:aws:sagemaker:us-east-1:1:transform-job/job-7\","
        "\"jobArn\":\"arn:aws:bedrock:us-east-1:1:model-invocation-job/abc\"}");
    struct json_object *p = workers_batch_params(req, rj);
    assert_string_equal(str(p, "id"), "batch_1"); /* remote_job strings win */
    assert_int_equal(json_object_get_int(json_object_object_get(p, "n")), 3);
    assert_null(json_object_object_get(p, "num_of_retries"));
    assert_null(json_object_object_get(p, "dlq"));
    assert_string_equal(str(p, "TransformJobName"), "job-7");
    assert_string_equal(str(p, "processedJobArn"),
                        "arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Amodel-invocation-job%2Fabc");
    json_object_put(p);
    p = workers_batch_params(NULL, NULL);
    assert_int_equal(json_object_object_length(p), 0);
    json_object_put(p);
    json_object_put(req);
    json_object_put(rj);
}

static void status_mapping(void **state)
{
    (void)state;
    struct mlr_settings *s = NULL;
    char err[256];
    assert_int_equal(mlr_settings_new(NULL, NULL, NULL, &s, err, sizeof(err)), MLR_OK);
    static const struct {
        const char *job;
        const char *state;
    } cases[] = {
        {"{\"status\":\"validating\"}", NULL},
        {"{\"status\":\"in_progress\"}", NULL},
        {"{\"status\":\"completed\"}", "COMPLETED"},
        {"{\"Status\":\"PartiallyCompleted\"}", "COMPLETED"},
        {"{\"TransformJobStatus\":\"Stopping\"}", "CANCELLING"},
        {"{\"TransformJobStatus\":\"Stopped\"}", "CANCELLED"},
        {"{\"status\":\"cancelling\"}", "CANCELLING"},
        {"{\"status\":\"expired\"}", "EXPIRED"},
        {"{\"status\":\"Failed\"}", "FAILED"},
        {"{\"status\":\"failed\",\"Status\":\"completed\"}", "FAILED"}, /* first field wins */
        {"{\"other\":\"completed\"}", NULL},
        {"{}", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct json_object *rj = json_tokener_parse(cases[i].job);
        const char *got = workers_batch_state(s, rj);
        if (cases[i].state)
            assert_string_equal(got ? got : "(null)", cases[i].state);
        else
            assert_null(got);
        json_object_put(rj);
    }
    mlr_settings_unref(s);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(synth_sagemaker),
        cmocka_unit_test(synth_openai_cohere),
        cmocka_unit_test(synth_bedrock),
        cmocka_unit_test(synth_provider_order),
        cmocka_unit_test(synth_unknown_provider),
        cmocka_unit_test(own_action_wins),
        cmocka_unit_test(no_batch_action),
        cmocka_unit_test(status_params),
        cmocka_unit_test(status_mapping),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
