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

static void predict(struct api_req *req, const char *id)
{
    if (id == NULL) {
        api_send_error(req, 404, "status_exception", "Failed to find model");
        return;
    }
    if (api_query_bool(req, "async")) {
        api_send_error(req, 400, "illegal_argument_exception",
                       "asynchronous predict (?async=true) is not available in this version");
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
