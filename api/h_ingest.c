/*
 * h_ingest.c — batch ingestion jobs (spec §7, our extension):
 * `POST /_plugins/_ml/models/{id}/_batch_ingest` writes a BATCH_INGEST task holding the job's
 * input and answers once it is committed; `GET /_plugins/_ml/tasks/{id}/_results` pages through
 * the results recorded so far. workers/batch.c runs the jobs. Loop thread.
 */
#include "api_int.h"

#include <stdlib.h>

#define RESULTS_MAX_SIZE 10000 /* most results per page */

struct ingest {
    struct api_req *req;
    char *input;          /* the task's input (heap; freed once the insert copied it) */
    int64_t total;        /* items */
};

static void on_ingest_stored(const struct store_write_result *r, void *data)
{
    struct ingest *in = data;
    if (r->status != MLR_OK) {
        api_send_errorf(in->req, api_status_from_err(r->status), "exception",
                        "failed to store the task: %s", mlr_strerror(r->status));
        return;
    }
    workers_kick(in->req->ctx->workers);
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "task_id", json_object_new_string(r->id));
    json_object_object_add(o, "status", json_object_new_string("CREATED"));
    api_send_json(in->req, 200, o);
}

/* The task document: ML Commons' fields plus progress, all zero. */
static struct json_object *ingest_task_doc(struct ingest *in, const char *model_id)
{
    struct json_object *doc = queue_task_doc_new(QUEUE_TASK_BATCH_INGEST, model_id,
                                                 QUEUE_STATE_CREATED, in->req->ctx->node_id, 1,
                                                 mlr_now_ms());
    struct json_object *progress = json_object_new_object();
    json_object_object_add(progress, "total", json_object_new_int64(in->total));
    json_object_object_add(progress, "completed", json_object_new_int64(0));
    json_object_object_add(progress, "failed", json_object_new_int64(0));
    json_object_object_add(doc, "progress", progress); /* consumes progress */
    return doc;
}

static void on_model_found(int status, struct store_doc *d, void *data)
{
    struct ingest *in = data;
    char task_id[MLR_ID_LEN + 1];
    if (status == MLR_OK)
        status = mlr_id_new(task_id);
    if (status != MLR_OK)
        free(in->input);
    if (status == MLR_ENOTFOUND) {
        api_send_error(in->req, 404, "status_exception", "Failed to find model");
        return;
    }
    if (status != MLR_OK) {
        api_send_errorf(in->req, 500, "exception", "cannot read the model: %s",
                        mlr_strerror(status));
        return;
    }
    struct json_object *task = ingest_task_doc(in, d->id);
    int rc = store_doc_insert(in->req->ctx->store, STORE_TASK, task_id, task, in->input,
                              on_ingest_stored, in);
    json_object_put(task);
    free(in->input); /* the insert copied it */
    in->input = NULL;
    if (rc != MLR_OK)
        api_send_errorf(in->req, 500, "exception", "failed to store the task: %s",
                        mlr_strerror(rc));
}

void api_h_model_batch_ingest(struct api_req *req)
{
    const char *id = api_path_id(req, 0);
    struct workers_error e;
    struct ingest *in = mlr_pool_alloc(&req->pool, sizeof(*in));
    in->req = req;
    if (workers_batch_ingest_build(req->json, &in->input, &in->total, &e) != MLR_OK) {
        api_send_workers_error(req, &e);
        return;
    }
    int rc = id ? store_doc_get(req->ctx->store, STORE_MODEL, id, 0, on_model_found, in)
                : MLR_ENOTFOUND;
    if (rc != MLR_OK)
        free(in->input);
    if (rc == MLR_ENOTFOUND)
        api_send_error(req, 404, "status_exception", "Failed to find model");
    else if (rc != MLR_OK)
        api_send_errorf(req, 500, "exception", "cannot read the model: %s", mlr_strerror(rc));
}

/* ---------------------------------- results ---------------------------------- */

static void on_results(int status, struct json_object *response, void *data)
{
    struct api_req *req = data;
    if (status == MLR_OK)
        api_send_json(req, 200, json_object_get(response));
    else if (status == MLR_ENOTFOUND)
        api_send_error(req, 404, "status_exception", "Failed to find task");
    else if (status == MLR_EINVAL)
        api_send_error(req, 400, "illegal_argument_exception",
                       "Only BATCH_INGEST tasks have results");
    else
        api_send_errorf(req, api_status_from_err(status), "exception",
                        "cannot read the results: %s", mlr_strerror(status));
}

/* Reads non-negative integer query parameter @name (default @dflt); -1 after answering 400. */
static int64_t query_count(struct api_req *req, const char *name, int64_t dflt, int64_t max)
{
    const char *v = api_query(req, name);
    if (v == NULL)
        return dflt;
    char *end = NULL;
    long long n = strtoll(v, &end, 10);
    if (*v == '\0' || *end != '\0' || n < 0 || n > max) {
        api_send_errorf(req, 400, "illegal_argument_exception",
                        "[%s] must be an integer between 0 and %lld, got [%s]", name,
                        (long long)max, v);
        return -1;
    }
    return n;
}

void api_h_task_results(struct api_req *req)
{
    const char *id = api_path_id(req, 0);
    int64_t from = query_count(req, "from", 0, INT32_MAX);
    int64_t size = from < 0 ? -1 : query_count(req, "size", 100, RESULTS_MAX_SIZE);
    if (from < 0 || size < 0)
        return;
    int rc = id ? store_batch_results(req->ctx->store, id, from, size, on_results, req)
                : MLR_ENOTFOUND;
    if (rc == MLR_ENOTFOUND)
        api_send_error(req, 404, "status_exception", "Failed to find task");
    else if (rc != MLR_OK)
        api_send_errorf(req, 500, "exception", "cannot read the results: %s", mlr_strerror(rc));
}
