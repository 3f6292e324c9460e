/*
 * h_batch_predict.c — `POST /_plugins/_ml/models/{id}/_batch_predict` (reference §6.9, spec §7): an
 * offline batch job at the model's provider, recorded as a BATCH_PREDICTION task. The work and
 * every refusal are in workers/ (workers_batch_predict); this maps the outcome. Loop thread.
 */
#include "api_int.h"

static void on_batch_created(struct json_object *response, const struct workers_error *e,
                             void *data)
{
    struct api_req *req = data;
    if (e)
        api_send_workers_error(req, e);
    else
        api_send_json(req, 200, json_object_get(response));
}

void api_h_model_batch_predict(struct api_req *req)
{
    const char *id = api_path_id(req, 0);
    if (id == NULL) {
        api_send_error(req, 404, "status_exception", "Failed to find model");
        return;
    }
    workers_batch_predict(req->ctx->workers, id, req->json, on_batch_created, req);
}
