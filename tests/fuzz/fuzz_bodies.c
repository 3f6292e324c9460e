/*
 * fuzz_bodies.c — libFuzzer target for the JSON body validators of every writing endpoint:
 * connector create (workers_connector_build), model register (workers_model_build), model group
 * register (workers_group_build), `_cluster/settings` PUT (mlr_settings_normalize, then the
 * normalised layer applied and turned into a snapshot as the handler does) and `_batch_ingest`
 * (workers_batch_ingest_build).
 *
 * Input: one selector byte, then the body. The selector's low bits pick the validator; bit 3
 * picks the settings snapshot the validators see (defaults, or one that trusts every endpoint
 * and private addresses, so connector URLs get past the allow-list and deeper checks run); bit 4
 * picks the caller (no users configured, or a non-admin user under model and connector access
 * control, so the access-field rules run).
 * Oracle: the sanitizers, plus the validators' contracts: on success an output exists, on
 * refusal the error carries a 4xx status and a reason.
 */
#include "fuzz.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"
#include "workers.h"

static struct mlr_settings *settings_default;
static struct mlr_settings *settings_open;

static void init_settings(void)
{
    char err[256];
    if (settings_default)
        return;
    if (mlr_settings_new(NULL, NULL, NULL, &settings_default, err, sizeof(err)) != MLR_OK)
        abort();
    struct json_object *p = json_tokener_parse(
        "{\"plugins.ml_commons.trusted_connector_endpoints_regex\":[\".*\"],"
        "\"plugins.ml_commons.connector.private_ip_enabled\":\"true\"}");
    if (mlr_settings_new(NULL, p, NULL, &settings_open, err, sizeof(err)) != MLR_OK)
        abort();
    json_object_put(p);
}

static const char *const roles[] = {"r1", "r2"};
static const struct workers_user user = {.name = "alice", .backend_roles = roles,
                                         .nbackend_roles = 2};
static const struct workers_caller nobody = {0};
static const struct workers_caller alice = {.user = &user, .model_ac = 1, .connector_ac = 1};

static void check_refusal(int rc, const struct workers_error *e)
{
    if (rc == MLR_OK)
        return;
    /* Bad input is a client error: never a 5xx, never an empty reason. */
    if (e->status < 400 || e->status > 499 || e->reason[0] == '\0' || e->type == NULL)
        abort();
}

static void connector(struct json_object *body, struct mlr_settings *s)
{
    struct workers_error e;
    struct json_object *cred = NULL, *doc = NULL;
    json_object_object_get_ex(body, "credential", &cred);
    struct json_object *keys = workers_credential_strings(cred);
    int rc = workers_connector_build(body, keys, s, 1, 2, &doc, &e);
    check_refusal(rc, &e);
    if (rc == MLR_OK && doc == NULL)
        abort();
    if (doc)
        json_object_to_json_string(doc); /* the stored text must be renderable */
    json_object_put(doc);
    json_object_put(keys);
}

static void model(struct json_object *body, const struct workers_caller *who,
                  struct mlr_settings *s)
{
    struct workers_error e;
    struct workers_model m;
    memset(&m, 0, sizeof(m));
    int rc = workers_model_build(body, who, s, 1, &m, &e);
    check_refusal(rc, &e);
    if (rc == MLR_OK && m.doc == NULL)
        abort();
    if (m.doc)
        json_object_to_json_string(m.doc);
    workers_model_cleanup(&m);
}

static void group(struct json_object *body, const struct workers_caller *who)
{
    struct workers_error e;
    struct json_object *doc = NULL;
    int rc = workers_group_build(body, who, 1, &doc, &e);
    check_refusal(rc, &e);
    json_object_put(doc);
}

/* PUT /_cluster/settings: each section normalised, applied to an empty layer, then snapshotted. */
static void settings(struct json_object *body)
{
    static const char *const scopes[] = {"persistent", "transient", "config"};
    for (size_t i = 0; i < sizeof(scopes) / sizeof(scopes[0]); i++) {
        struct json_object *section = NULL, *norm = NULL;
        char err[512] = "";
        if (!json_object_object_get_ex(body, scopes[i], &section))
            continue;
        if (mlr_settings_normalize(section, scopes[i], &norm, err, sizeof(err)) != MLR_OK) {
            if (err[0] == '\0')
                abort();
            continue;
        }
        struct json_object *layer = mlr_settings_layer_apply(NULL, norm);
        struct mlr_settings *snap = NULL;
        int rc = i == 2 ? mlr_settings_new(layer, NULL, NULL, &snap, err, sizeof(err))
                        : mlr_settings_new(NULL, layer, NULL, &snap, err, sizeof(err));
        /* What normalize accepted, a snapshot must accept too (PUT cannot store a poison). */
        if (rc != MLR_OK)
            abort();
        struct json_object *r = mlr_settings_render(layer, i & 1);
        json_object_put(r);
        mlr_settings_unref(snap);
        json_object_put(layer);
        json_object_put(norm);
    }
}

static void batch_ingest(struct json_object *body)
{
    struct workers_error e;
    char *input = NULL;
    int64_t total = -1;
    int rc = workers_batch_ingest_build(body, &input, &total, &e);
    check_refusal(rc, &e);
    if (rc == MLR_OK && (input == NULL || total < 0))
        abort();
    free(input);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    init_settings();
    unsigned sel = data[0];
    struct json_object *body = fuzz_json(data + 1, size - 1);
    if (body == NULL || !json_object_is_type(body, json_type_object)) {
        json_object_put(body); /* the dispatcher refuses anything but an object */
        return 0;
    }
    struct mlr_settings *s = (sel & 8) ? settings_open : settings_default;
    const struct workers_caller *who = (sel & 16) ? &alice : &nobody;
    switch (sel % 5) {
    case 0:
        connector(body, s);
        break;
    case 1:
        model(body, who, s);
        break;
    case 2:
        group(body, who);
        break;
    case 3:
        settings(body);
        break;
    default:
        batch_ingest(body);
        break;
    }
    json_object_put(body);
    return 0;
}
