/*
 * batch_predict.c — offline batch predict (reference §6.9): creating a provider-side batch job, watching
 * it until the provider says it is over, and cancelling it.
 *
 * A batch predict runs the connector's batch_predict action through the predict engine (same
 * templating, credentials, SigV4, trusted-URL and private-address checks) and, when the
 * provider accepts the job, stores a BATCH_PREDICTION task whose remote_job is the provider's
 * answer. The task is never run by the dispatcher: the poller below reads the open ones every
 * mlrelay.batch_predict.poll_interval, calls each one's batch_predict_status action, merges the
 * answer into remote_job and maps the provider's status to the task state with the
 * remote_job.status_regex.* settings. GET on the task only reads the stored document (ML Commons
 * calls the provider on every GET; we do not, so a GET costs no provider call).
 *
 * Connectors may omit the status and cancel actions; they are then synthesised from the
 * batch_predict action for the providers ML Commons knows (SageMaker, OpenAI, Cohere, Bedrock).
 *
 * Invariants: only the poller writes a BATCH_PREDICTION task after its creation, one round at a
 * time (a round starts only when the previous one finished), so its remote_job is never written
 * by two parties at once. Loop thread only, except the deployment builds on the pool. Costs: one
 * indexed read per round, then at most POLL_CONCURRENCY provider calls in flight and one group-
 * committed write per task.
 */
#include "workers_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#define ISE "illegal_state_exception"

static const char *const DISABLED =
    "Offline Batch Inference is currently disabled. To enable it, update the setting "
    "\"plugins.ml_commons.offline_batch_inference_enabled\" to true.";

#define fail workers_error_set

static struct json_object *get(struct json_object *o, const char *k)
{
    struct json_object *v = NULL;
    return o && json_object_object_get_ex(o, k, &v) ? v : NULL;
}

/* The first element of @a when it is a non-empty array, else NULL (json-c asserts the type). */
static struct json_object *first(struct json_object *a)
{
    return a && json_object_is_type(a, json_type_array) ? json_object_array_get_idx(a, 0) : NULL;
}

static const char *get_str(struct json_object *o, const char *k)
{
    struct json_object *v = get(o, k);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static int batch_enabled(struct workers *w)
{
    struct mlr_settings *s = workers_settings_get(w);
    int on = mlr_settings_bool(s, MLR_S_OFFLINE_BATCH_ENABLED);
    mlr_settings_unref(s);
    return on;
}

/* ---------------------------------- action synthesis ---------------------------------- */

/* Java's String.replace(): every occurrence of @from in @s becomes @to (heap result). */
static char *replace_all(const char *s, const char *from, const char *to)
{
    struct mlr_buf b;
    mlr_buf_init(&b, 0);
    size_t n = strlen(from);
    for (const char *p = s; *p;) {
        const char *hit = strstr(p, from);
        if (hit == NULL) {
            mlr_buf_puts(&b, p);
            break;
        }
        mlr_buf_append(&b, p, (size_t)(hit - p));
        mlr_buf_puts(&b, to);
        p = hit + n;
    }
    return b.data ? b.data : mlr_xstrdup("");
}

/* The batch_predict URL with the connector's own parameters substituted, as ML Commons does
 * before it looks for the provider's name in it. */
static int batch_url(struct json_object *connector, struct json_object *batch, char **out,
                     struct workers_error *e)
{
    struct json_object *params = NULL;
    int rc = workers_params_merge(get(connector, "parameters"), NULL, NULL, &params, e);
    if (rc == MLR_OK)
        rc = workers_template_render(get_str(batch, "url") ? get_str(batch, "url") : "", params,
                                     NULL, out, e);
    json_object_put(params);
    return rc;
}

int workers_batch_action(struct json_object *connector, const char *type,
                         struct json_object **out, struct workers_error *e)
{
    int cancel = strcmp(type, "CANCEL_BATCH_PREDICT") == 0;
    struct json_object *own = workers__action_find(connector, type);
    if (own) {
        *out = json_object_get(own);
        return MLR_OK;
    }
    struct json_object *batch = workers__action_find(connector, "BATCH_PREDICT");
    if (batch == NULL)
        return fail(e, 400, "illegal_argument_exception", "no BATCH_PREDICT action found");
    char *url = NULL, *synth = NULL;
    if (batch_url(connector, batch, &url, e) != MLR_OK)
        return MLR_EINVAL;
    /* ML Commons picks the provider by the first of these names the URL contains. */
    static const char *const providers[] = {"sagemaker", "openai", "bedrock", "cohere"};
    size_t which = 0;
    while (which < 4 && strstr(url, providers[which]) == NULL)
        which++;
    const char *body = NULL, *method = cancel ? "POST" : "GET";
    if (which == 0) {
        synth = replace_all(url, "CreateTransformJob",
                            cancel ? "StopTransformJob" : "DescribeTransformJob");
        body = "{ \"TransformJobName\" : \"${parameters.TransformJobName}\"}";
        method = "POST";
    } else if (which == 1 || which == 3) {
        synth = mlr_xasprintf("%s/${parameters.id}%s", url, cancel ? "/cancel" : "");
    } else if (which == 2) {
        synth = mlr_xasprintf("%s/${parameters.processedJobArn}%s", url, cancel ? "/stop" : "");
    }
    free(url);
    if (synth == NULL)
        return fail(e, 400, "unsupported_operation_exception",
                    cancel ? "Please configure the action type to cancel the batch job in the "
                             "connector"
                           : "Please configure the action type to get the batch job details in "
                             "the connector");
    struct json_object *a = json_object_new_object();
    json_object_object_add(a, "action_type", json_object_new_string(type));
    json_object_object_add(a, "method", json_object_new_string(method));
    json_object_object_add(a, "url", json_object_new_string(synth));
    if (get(batch, "headers"))
        json_object_object_add(a, "headers", json_object_get(get(batch, "headers")));
    if (body)
        json_object_object_add(a, "request_body", json_object_new_string(body));
    json_object_object_add(a, WORKERS__SYNTHESISED, json_object_new_boolean(1));
    free(synth);
    *out = a;
    return MLR_OK;
}

/* Percent-encodes everything but RFC 3986's unreserved characters (a Bedrock job ARN holds ':'
 * and '/', which must not split the URL path). */
static char *url_encode(const char *s)
{
    struct mlr_buf b;
    mlr_buf_init(&b, 0);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalnum(*p) || strchr("-._~", *p))
            mlr_buf_append(&b, p, 1);
        else
            mlr_buf_printf(&b, "%%%02X", *p);
    }
    return b.data ? b.data : mlr_xstrdup("");
}

struct json_object *workers_batch_params(struct json_object *request_params,
                                         struct json_object *remote_job)
{
    struct json_object *p = json_object_new_object();
    if (request_params && json_object_is_type(request_params, json_type_object)) {
        json_object_object_foreach(request_params, k, v)
            json_object_object_add(p, k, json_object_get(v));
    }
    if (remote_job && json_object_is_type(remote_job, json_type_object)) {
        json_object_object_foreach(remote_job, k, v)
        {
            if (v && json_object_is_type(v, json_type_string))
                json_object_object_add(p, k, json_object_get(v));
        }
    }
    /* SageMaker's Describe/Stop take the job name; its create answer only carries the ARN. */
    const char *arn = get_str(p, "TransformJobArn");
    if (get(p, "TransformJobName") == NULL && arn) {
        const char *slash = strrchr(arn, '/');
        json_object_object_add(p, "TransformJobName",
                               json_object_new_string(slash ? slash + 1 : arn));
    }
    const char *job_arn = get_str(p, "jobArn");
    if (get(p, "processedJobArn") == NULL && job_arn) {
        char *enc = url_encode(job_arn);
        json_object_object_add(p, "processedJobArn", json_object_new_string(enc));
        free(enc);
    }
    return p;
}

/* The body a status or cancel call is rendered from: {"parameters": ...}. */
static struct json_object *job_body(const char *input, struct json_object *task_doc)
{
    struct json_object *req = input ? json_tokener_parse(input) : NULL;
    struct json_object *body = json_object_new_object();
    json_object_object_add(body, "parameters",
                           workers_batch_params(req, get(task_doc, "remote_job")));
    json_object_put(req);
    return body;
}

/* The first tensor's dataAsMap of a successful answer, if it is an object (borrowed). */
static struct json_object *answer_map(struct json_object *response, long *status)
{
    struct json_object *r0 = first(get(response, "inference_results"));
    struct json_object *t0 = first(get(r0, "output"));
    struct json_object *map = get(t0, "dataAsMap");
    *status = get(r0, "status_code") ? json_object_get_int64(get(r0, "status_code")) : 0;
    return map && json_object_is_type(map, json_type_object) ? map : NULL;
}

/* ------------------------------- deployments for job calls ------------------------------- */

/*
 * Status and cancel calls need the model's connector and credentials but not a deployment that
 * serves predicts: a model whose TTL expired must not be deployed again just to be polled. The
 * registry's deployment is used when there is one; otherwise one is built on the pool for this
 * call and dropped after it.
 */
struct dep_req {
    uv_work_t work;
    struct workers *w;
    char model_id[STORE_ID_MAX + 1];
    struct deployment *d;
    char err[512];
    workers__deployment_cb cb;
    void *data;
};

static void dep_work(uv_work_t *req)
{
    struct dep_req *r = container_of(req, struct dep_req, work);
    if (workers__deployment_build(r->w, r->model_id, &r->d, r->err, sizeof(r->err)) != MLR_OK)
        r->d = NULL;
}

static void dep_after(uv_work_t *req, int status)
{
    struct dep_req *r = container_of(req, struct dep_req, work);
    UNUSED(status);
    r->cb(r->d, r->d ? NULL : (r->err[0] ? r->err : "cannot read the model"), r->data);
    workers_deployment_unref(r->d);
    free(r);
}

void workers__deployment_for(struct workers *w, const char *model_id, workers__deployment_cb cb,
                             void *data)
{
    struct deployment *d = model_id ? workers_deployment_get(w, model_id) : NULL;
    if (d || model_id == NULL) {
        cb(d, d ? NULL : "the task has no model", data);
        return;
    }
    struct dep_req *r = mlr_xcalloc(1, sizeof(*r));
    r->w = w;
    snprintf(r->model_id, sizeof(r->model_id), "%s", model_id);
    r->cb = cb;
    r->data = data;
    if (uv_queue_work(w->loop, &r->work, dep_work, dep_after) != 0) {
        free(r);
        cb(NULL, "cannot queue the model read", data);
    }
}

/* ---------------------------------- creating a job ---------------------------------- */

struct batch_create {
    struct workers *w;
    char model_id[STORE_ID_MAX + 1];
    char task_id[MLR_ID_LEN + 1];
    struct json_object *body;        /* {"parameters": ...} sent to the action */
    struct json_object *dlq;         /* the request's dlq, or NULL */
    struct json_object *remote_job;  /* what the task will carry */
    workers_predict_cb cb;
    void *data;
};

static void create_free(struct batch_create *b)
{
    json_object_put(b->body);
    json_object_put(b->dlq);
    json_object_put(b->remote_job);
    free(b);
}

static void create_fail(struct batch_create *b, const struct workers_error *e)
{
    b->cb(NULL, e, b->data);
    create_free(b);
}

static void on_task_stored(const struct store_write_result *r, void *data)
{
    struct batch_create *b = data;
    struct workers_error e;
    if (r->status != MLR_OK) {
        fail(&e, 500, "exception", "failed to store the task: %s", mlr_strerror(r->status));
        create_fail(b, &e);
        return;
    }
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "task_id", json_object_new_string(b->task_id));
    json_object_object_add(o, "status", json_object_new_string("CREATED"));
    json_object_object_add(o, "remote_job", json_object_get(b->remote_job));
    b->cb(o, NULL, b->data);
    json_object_put(o);
    create_free(b);
}

/* The provider accepted the job: store the task, then answer. */
static void store_job(struct batch_create *b, struct json_object *map)
{
    struct workers_error e;
    json_object_deep_copy(map, &b->remote_job, NULL);
    if (b->dlq)
        json_object_object_add(b->remote_job, "dlq", json_object_get(b->dlq));
    struct json_object *task = queue_task_doc_new(QUEUE_TASK_BATCH_PREDICTION, b->model_id,
                                                  QUEUE_STATE_CREATED, b->w->node_id, 0,
                                                  mlr_now_ms());
    json_object_object_add(task, "remote_job", json_object_get(b->remote_job));
    /* The request parameters stay with the task (side data, never shown) for the status and
     * cancel calls, which render their templates from them too. */
    const char *input = json_object_to_json_string_ext(get(b->body, "parameters"),
                                                       JSON_C_TO_STRING_PLAIN);
    int rc = mlr_id_new(b->task_id);
    if (rc == MLR_OK)
        rc = store_doc_insert(b->w->store, STORE_TASK, b->task_id, task, input, on_task_stored,
                              b);
    json_object_put(task);
    if (rc != MLR_OK) {
        fail(&e, 500, "exception", "failed to store the task: %s", mlr_strerror(rc));
        create_fail(b, &e);
    }
}

static void on_job_created(struct json_object *response, const struct workers_error *e,
                           long upstream_status, void *data)
{
    struct batch_create *b = data;
    struct workers_error nf;
    long status = upstream_status;
    struct json_object *map = response ? answer_map(response, &status) : NULL;
    if (map && status >= 200 && status < 300) {
        store_job(b, map);
        return;
    }
    if (e && upstream_status == 0) { /* refused before or without a provider answer */
        create_fail(b, e);
        return;
    }
    char code[24];
    snprintf(code, sizeof(code), "%ld", status);
    const char *kv[] = {"model_id", b->model_id, "upstream_status", code, "error",
                        e ? e->reason : "the answer is not a JSON object"};
    mlr_log_kv(MLR_LOG_WARN, "batch", "batch job not created", kv, 3);
    fail(&nf, 404, "resource_not_found_exception", "Unable to create batch transform job");
    create_fail(b, &nf);
}

static void on_open_counted(int status, int64_t count, void *data)
{
    struct batch_create *b = data;
    struct workers_error e;
    struct mlr_settings *s = workers_settings_get(b->w);
    int64_t max = mlr_settings_int(s, MLR_S_MAX_BATCH_TASKS);
    mlr_settings_unref(s);
    if (status != MLR_OK) {
        fail(&e, 500, "exception", "cannot count the batch tasks: %s", mlr_strerror(status));
        create_fail(b, &e);
        return;
    }
    if (count >= max) {
        fail(&e, 429, "status_exception", /* OpenSearchStatusException in ML Commons */
             "Exceeded maximum limit for BATCH_PREDICTION tasks. To increase the limit, update "
             "the plugins.ml_commons.max_batch_inference_tasks setting.");
        create_fail(b, &e);
        return;
    }
    workers__action(b->w, b->model_id, "BATCH_PREDICT", b->body, on_job_created, b);
}

/* "dlq": {"bucket","region"}, both strings, when present. */
static int dlq_check(struct json_object *dlq, struct workers_error *e)
{
    if (dlq == NULL)
        return MLR_OK;
    if (!json_object_is_type(dlq, json_type_object) || get_str(dlq, "bucket") == NULL ||
        get_str(dlq, "region") == NULL)
        return fail(e, 400, "illegal_argument_exception",
                    "dlq needs both \"bucket\" and \"region\" as strings");
    return MLR_OK;
}

void workers_batch_predict(struct workers *w, const char *model_id, struct json_object *body,
                           workers_predict_cb cb, void *data)
{
    struct workers_error e;
    struct json_object *params = get(body, "parameters");
    /* ML Commons throws IllegalStateException here, which it answers with 500; a disabled
     * feature is the client's problem, so we say 400 (spec §9) with the same wording. */
    if (!batch_enabled(w)) {
        fail(&e, 400, ISE, "%s", DISABLED);
    } else if (params && !json_object_is_type(params, json_type_object)) {
        fail(&e, 400, "illegal_argument_exception", "parameters must be an object");
    } else if (dlq_check(get(body, "dlq"), &e) == MLR_OK) {
        struct batch_create *b = mlr_xcalloc(1, sizeof(*b));
        b->w = w;
        snprintf(b->model_id, sizeof(b->model_id), "%s", model_id);
        b->body = json_object_new_object();
        json_object_object_add(b->body, "parameters",
                               params ? json_object_get(params) : json_object_new_object());
        b->dlq = json_object_get(get(body, "dlq"));
        b->cb = cb;
        b->data = data;
        if (store_task_count_open(w->store, "BATCH_PREDICTION", on_open_counted, b) == MLR_OK)
            return;
        fail(&e, 500, "exception", "cannot count the batch tasks");
        create_free(b);
    }
    cb(NULL, &e, data);
}

/* ---------------------------------- cancel ---------------------------------- */

struct batch_cancel {
    struct workers *w;
    char task_id[STORE_ID_MAX + 1]; /* for the log */
    struct json_object *doc;    /* the task document */
    char *input;                /* its request parameters (JSON text) */
    workers_batch_cancel_cb cb;
    void *data;
};

static void cancel_end(struct batch_cancel *c, int handled, const struct workers_error *e)
{
    c->cb(handled, e, c->data);
    json_object_put(c->doc);
    free(c->input);
    free(c);
}

static void on_cancel_answer(struct json_object *response, const struct workers_error *e,
                             long upstream_status, void *data)
{
    struct batch_cancel *c = data;
    struct workers_error err;
    long status = upstream_status;
    if (response)
        answer_map(response, &status);
    if (e == NULL && status >= 200 && status < 300) {
        cancel_end(c, 1, NULL);
        return;
    }
    if (e && upstream_status == 0 && e->status < 500) { /* refused here, before any call */
        cancel_end(c, 1, e);
        return;
    }
    char code[24];
    snprintf(code, sizeof(code), "%ld", status);
    const char *kv[] = {"task_id", c->task_id, "model_id", get_str(c->doc, "model_id"),
                        "upstream_status", code, "error", e ? e->reason : ""};
    mlr_log_kv(MLR_LOG_WARN, "batch", "batch job not cancelled", kv, 4);
    /* An upstream failure: 500 as in ML Commons. */
    fail(&err, 500, "exception", "Couldn't cancel the transform job. Please try again");
    cancel_end(c, 1, &err);
}

static void on_cancel_deployment(struct deployment *d, const char *why, void *data)
{
    struct batch_cancel *c = data;
    struct workers_error e;
    struct json_object *action = NULL;
    if (d == NULL) {
        fail(&e, 404, "status_exception", "Failed to retrieve the ML model for the given task ID");
        const char *kv[] = {"task_id", c->task_id, "model_id", get_str(c->doc, "model_id"),
                            "error", why};
        mlr_log_kv(MLR_LOG_WARN, "batch", "batch job not cancelled", kv, 3);
        cancel_end(c, 1, &e);
        return;
    }
    if (workers_batch_action(d->connector, "CANCEL_BATCH_PREDICT", &action, &e) != MLR_OK) {
        cancel_end(c, 1, &e);
        return;
    }
    struct json_object *body = job_body(c->input, c->doc);
    workers__action_run(c->w, d, "CANCEL_BATCH_PREDICT", action, body, on_cancel_answer, c);
    json_object_put(body);
    json_object_put(action);
}

static void on_cancel_task(int status, struct store_doc *doc, void *data)
{
    struct batch_cancel *c = data;
    struct workers_error e;
    if (status != MLR_OK) {
        fail(&e, status == MLR_ENOTFOUND ? 404 : 500, "status_exception",
             status == MLR_ENOTFOUND ? "Failed to find task" : "cannot read the task");
        cancel_end(c, 1, &e);
        return;
    }
    const char *type = get_str(doc->doc, "task_type");
    if (type == NULL || strcmp(type, "BATCH_PREDICTION") != 0) {
        cancel_end(c, 0, NULL);
        return;
    }
    if (!batch_enabled(c->w)) {
        fail(&e, 400, ISE, "%s", DISABLED); /* 500 in ML Commons, see workers_batch_predict() */
        cancel_end(c, 1, &e);
        return;
    }
    c->doc = json_object_get(doc->doc);
    c->input = doc->credential ? mlr_xstrdup(doc->credential) : NULL;
    workers__deployment_for(c->w, get_str(c->doc, "model_id"), on_cancel_deployment, c);
}

void workers_batch_cancel(struct workers *w, const char *task_id, workers_batch_cancel_cb cb,
                          void *data)
{
    struct batch_cancel *c = mlr_xcalloc(1, sizeof(*c));
    c->w = w;
    snprintf(c->task_id, sizeof(c->task_id), "%s", task_id);
    c->cb = cb;
    c->data = data;
    if (store_doc_get(w->store, STORE_TASK, task_id, 1, on_cancel_task, c) != MLR_OK) {
        struct workers_error e;
        fail(&e, 500, "exception", "cannot read the task");
        cancel_end(c, 1, &e);
    }
}
