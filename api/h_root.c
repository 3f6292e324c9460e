/*
 * h_root.c — `GET /`: answers like an OpenSearch node (spec §1), so tooling that gates on the
 * version accepts us. `number` is the ML Commons API level we match; `distribution` says who we
 * really are.
 */
#include "api_int.h"

void api_h_root(struct api_req *req)
{
    const struct api_context *ctx = req->ctx;
    struct json_object *v = json_object_new_object();
    json_object_object_add(v, "distribution", json_object_new_string("mlrelay"));
    json_object_object_add(v, "number", json_object_new_string(MLR_API_LEVEL));
    json_object_object_add(v, "mlrelay_version", json_object_new_string(MLR_VERSION));
    json_object_object_add(v, "build_type", json_object_new_string("source"));
    json_object_object_add(v, "build_snapshot", json_object_new_boolean(0));
    json_object_object_add(v, "minimum_wire_compatibility_version",
                           json_object_new_string(MLR_API_LEVEL));
    json_object_object_add(v, "minimum_index_compatibility_version",
                           json_object_new_string(MLR_API_LEVEL));
    struct json_object *root = json_object_new_object();
    json_object_object_add(root, "name", json_object_new_string(ctx->node_name));
    json_object_object_add(root, "cluster_name", json_object_new_string("mlrelay"));
    json_object_object_add(root, "cluster_uuid",
                           json_object_new_string(store_cluster_uuid(ctx->store)));
    json_object_object_add(root, "version", v); /* consumes v */
    json_object_object_add(root, "tagline",
                           json_object_new_string("The ML Commons remote-model API, standalone"));
    api_send_json(req, 200, root);
}
