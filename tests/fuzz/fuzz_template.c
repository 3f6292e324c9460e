/*
 * fuzz_template.c — libFuzzer target for the template engine as a predict uses it: the parameter
 * map (workers_params_merge over connector, request and pre-process layers), rendering a body
 * template and a header template with credentials (workers_template_render), and the checks on
 * the result (workers_body_check, workers_header_check).
 *
 * Input: "connector params JSON\0request params JSON\0body template\0header template". Values
 * that are not objects are dropped (the merge requires objects for the connector layer). Oracle:
 * the sanitizers, the 16 MiB output cap (a render may never produce more), and the contract that
 * out-params are written only on success.
 */
#include "fuzz.h"

#include <stdlib.h>

#include "common.h"
#include "workers.h"

static struct json_object *object_or_null(const uint8_t *d, size_t n)
{
    struct json_object *o = fuzz_json(d, n);
    if (o && !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

static void render(const char *tmpl, struct json_object *params, struct json_object *cred,
                   int header)
{
    struct workers_error e;
    char *out = NULL;
    int rc = workers_template_render(tmpl, params, cred, &out, &e);
    if (rc != MLR_OK) {
        if (out != NULL || e.status != 400)
            abort();
        return;
    }
    if (strlen(out) > WORKERS_TEMPLATE_MAX_BYTES)
        abort();
    if (header)
        workers_header_check("X-Fuzz", out, &e);
    else
        workers_body_check(out, params, &e);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *f[4];
    size_t n[4];
    for (int i = 0; i < 4; i++)
        fuzz_field(&data, &size, &f[i], &n[i]);
    struct json_object *conn = object_or_null(f[0], n[0]);
    struct json_object *reqp = fuzz_json(f[1], n[1]); /* any type: the merge must refuse */
    struct json_object *cred = json_tokener_parse("{\"key\":\"s3cr\\\"et\",\"k2\":\"${parameters.a}\"}");
    struct json_object *pre = json_tokener_parse("{\"input\":\"[\\\"a\\\"]\"}");
    struct json_object *params = NULL;
    struct workers_error e;
    int rc = workers_params_merge(conn, reqp, (n[3] & 1) ? pre : NULL, &params, &e);
    if (rc != MLR_OK && (params != NULL || e.status != 400))
        abort();
    if (rc == MLR_OK) {
        char *body = mlr_xstrndup((const char *)f[2], n[2]);
        char *header = mlr_xstrndup((const char *)f[3], n[3]);
        render(body, params, NULL, 0);
        render(header, params, cred, 1);
        free(body);
        free(header);
    }
    json_object_put(params);
    json_object_put(pre);
    json_object_put(cred);
    json_object_put(reqp);
    json_object_put(conn);
    return 0;
}
