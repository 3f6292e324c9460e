/*
 * fuzz_jsonpath.c — libFuzzer target for the response side of the predict engine: the JSONPath
 * subset (workers_jsonpath), the built-in post-process functions with an optional
 * response_filter (workers_postprocess), and the pre-process functions over text_docs
 * (workers_preprocess_step, workers_step_parse).
 *
 * Input: selector byte, then "path\0json". The selector picks the pre/post-process function
 * (or none), ndocs and the step size. Oracle: the sanitizers (the JSONPath evaluator promises
 * no recursion whatever the depth of the document), and the documented result contracts.
 */
#include "fuzz.h"

#include <stdlib.h>

#include "common.h"
#include "workers.h"

static const char *const post_fns[] = {
    NULL,
    "connector.post_process.openai.embedding",
    "connector.post_process.cohere.embedding",
    "connector.post_process.default.embedding",
    "connector.post_process.bedrock.embedding",
    "connector.post_process.cohere.rerank",
    "connector.post_process.default.rerank",
    "connector.post_process.bedrock.rerank",
};

static const char *const pre_fns[] = {
    "connector.pre_process.openai.embedding", "connector.pre_process.default.embedding",
    "connector.pre_process.cohere.embedding", "connector.pre_process.bedrock.embedding",
    "connector.pre_process.cohere.rerank",    "connector.pre_process.default.rerank",
    "connector.pre_process.bedrock.rerank",   "connector.pre_process.unknown",
};

static void jsonpath(struct json_object *root, const char *path)
{
    struct workers_error e;
    struct json_object *out = NULL;
    int rc = workers_jsonpath(root, path, &out, &e);
    if (rc != MLR_OK && rc != MLR_ENOTFOUND && rc != MLR_EINVAL)
        abort();
    if (rc != MLR_OK && out != NULL)
        abort(); /* out-params are written only on success */
    if (out)
        json_object_to_json_string(out);
    json_object_put(out);
}

static void postprocess(unsigned sel, struct json_object *root, const char *path)
{
    struct workers_error e;
    struct json_object *out = NULL;
    const char *fn = post_fns[sel % 8];
    const char *filter = (sel & 0x40) ? path : NULL;
    int rc = workers_postprocess(fn, filter, root, (int)((sel >> 3) & 7), &out, &e);
    if (rc == MLR_OK && !json_object_is_type(out, json_type_array))
        abort();
    if (rc != MLR_OK && (e.status != 400 && e.status != 500))
        abort();
    if (out)
        json_object_to_json_string(out);
    json_object_put(out);
}

static void preprocess(unsigned sel, struct json_object *root, const char *path)
{
    struct workers_error e;
    struct json_object *requests = NULL;
    int step = 0;
    if (workers_step_parse((sel & 0x80) ? path : NULL, &step, &e) != MLR_OK)
        step = -1;
    struct json_object *docs = NULL;
    if (!json_object_object_get_ex(root, "text_docs", &docs))
        docs = root;
    int rc = workers_preprocess_step(pre_fns[sel % 8], docs, path, step, &requests, &e);
    if (rc == MLR_OK && !json_object_is_type(requests, json_type_array))
        abort();
    json_object_put(requests);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned sel = data[0];
    data++;
    size--;
    const uint8_t *p, *j;
    size_t plen, jlen;
    fuzz_field(&data, &size, &p, &plen);
    fuzz_field(&data, &size, &j, &jlen);
    struct json_object *root = fuzz_json(j, jlen);
    if (root == NULL && jlen > 0)
        return 0;
    char *path = mlr_xstrndup((const char *)p, plen);
    jsonpath(root, path);
    postprocess(sel, root, path);
    preprocess(sel, root, path);
    free(path);
    json_object_put(root);
    return 0;
}
