/*
 * h_predict.c — `POST /_plugins/_ml/models/{id}/_predict` and the legacy
 * `POST /_plugins/_ml/_predict/{algorithm}/{id}` (reference §6.8). The predict engine in
 * workers/ does the work; this only checks the path and maps the outcome. Loop thread.
 */
#include "api_int.h"

#include <strings.h>

static void on_predicted(struct json_object *response, const struct workers_error *e, void *data)
{
    struct api_req *req = data;
    if (e)
        api_send_workers_error(req, e);
    else
        api_send_json(req, 200, json_object_get(response));
}

static void on_async_stored(const struct store_write_result *r, void *data)
{
    struct api_req *req = data;
    if (r->status != MLR_OK) {
        api_send_errorf(req, api_status_from_err(r->status), "exception",
                        "failed to store the task: %s", mlr_strerror(r->status));
        return;
    }
    workers_kick(req->ctx->workers);
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "task_id", json_object_new_string(r->id));
    json_object_object_add(o, "status", json_object_new_string("CREATED"));
    api_send_json(req, 200, o);
}

/* `?async=true`: a PREDICTION task carrying the body, answered once it is committed. */
static void predict_async(struct api_req *req, const char *id)
{
    char task_id[MLR_ID_LEN + 1];
    if (mlr_id_new(task_id) != MLR_OK) {
        api_send_error(req, 500, "exception", "cannot generate an id");
        return;
    }
    struct json_object *task = queue_task_doc_new(QUEUE_TASK_PREDICTION, id, QUEUE_STATE_CREATED,
                                                  req->ctx->node_id, 1, mlr_now_ms());
    const char *input = json_object_to_json_string_ext(req->json, JSON_C_TO_STRING_PLAIN);
    int rc = store_doc_insert(req->ctx->store, STORE_TASK, task_id, task, input, on_async_stored,
                              req);
    json_object_put(task);
    if (rc != MLR_OK)
        api_send_errorf(req, 500, "exception", "failed to store the task: %s", mlr_strerror(rc));
}

static void predict(struct api_req *req, const char *id)
{
    if (id == NULL) {
        api_send_error(req, 404, "status_exception", "Failed to find model");
        return;
    }
    if (api_query_bool(req, "async")) {
        predict_async(req, id);
        return;
    }
    workers_predict(req->ctx->workers, id, req->json, on_predicted, req);
}

void api_h_model_predict(struct api_req *req)
{
    predict(req, api_path_id(req, 0));
}

void api_h_algorithm_predict(struct api_req *req)
{
    const char *algo = req->params[0];
    static const char *const ok[] = {"remote", "text_embedding", "text_similarity"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        if (algo && strcasecmp(algo, ok[i]) == 0) {
            predict(req, api_path_id(req, 1));
            return;
        }
    }
    api_send_errorf(req, 400, "illegal_argument_exception",
                    "mlrelay serves remote models only: unsupported algorithm [%s]",
                    algo ? algo : "");
}
