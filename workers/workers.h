/*
 * workers.h — the execution side of mlrelay. Today it holds the node's current cluster-settings
 * snapshot, which every thread that runs work reads; the task worker pool and the predict engine
 * (connector templates, libcurl on the loop) arrive with the queue and predict issues.
 *
 * Threading: workers_settings_get() may be called from any thread; everything else on the loop
 * thread.
 */
#ifndef MLR_WORKERS_H
#define MLR_WORKERS_H

#include <uv.h>

#include "common.h"
#include "queue.h"

struct workers;
struct json_object;

/**
 * Creates the worker context holding @settings (takes ownership of that reference). @threads is
 * the pool size (workers.threads). Returns the new object; never fails (OOM aborts).
 */
struct workers *workers_new(uv_loop_t *loop, struct mlr_settings *settings, int threads);

/** Releases @w and its settings reference. Accepts NULL. */
void workers_free(struct workers *w);

/**
 * Returns a new reference to the current settings snapshot; the caller releases it with
 * mlr_settings_unref(). Thread-safe.
 */
struct mlr_settings *workers_settings_get(struct workers *w);

/**
 * Installs @settings as the current snapshot (takes ownership of that reference). Threads that
 * still hold the previous snapshot keep using it until they release it. Thread-safe.
 */
void workers_settings_set(struct workers *w, struct mlr_settings *settings);

/**
 * Checks that applying the normalised change sets @persistent and @transient (either may be
 * NULL) to the current settings yields a valid snapshot. Returns MLR_OK, or MLR_EINVAL with the
 * reason in @err. Changes nothing. Loop thread.
 */
int workers_settings_check(struct workers *w, struct json_object *persistent,
                           struct json_object *transient, char *err, size_t errlen);

/**
 * Applies the change sets to the *current* snapshot and installs the result. Called once the
 * persistent part is committed; building from the current snapshot at that moment keeps
 * concurrent PUTs in commit order. Returns MLR_OK or MLR_EINVAL (settings unchanged). Loop thread.
 */
int workers_settings_apply(struct workers *w, struct json_object *persistent,
                           struct json_object *transient, char *err, size_t errlen);

/* ------------------------------------------------------------------------------------------ */
/* Connectors: validation and the stored document (connector.c). Pure; any thread.             */
/* ------------------------------------------------------------------------------------------ */

/** A refusal with the HTTP status, OpenSearch error type and reason the API answers with. */
struct workers_error {
    int status;          /* HTTP status, e.g. 400 */
    const char *type;    /* static, e.g. "illegal_argument_exception" */
    char reason[1024];   /* exact ML Commons wording where it has one */
};

/**
 * Converts a parameter value to its stored string form as ML Commons does: strings as-is,
 * numbers in Java's notation (0.0001 -> "1.0E-4"), objects/arrays/booleans as compact JSON,
 * null as "null". Returns a heap string the caller frees.
 */
char *workers_param_string(struct json_object *v);

/** Whether @name is a built-in pre-process (post = 0) or post-process (post = 1) function. */
int workers_function_known(const char *name, int post);

/** Checks a rendered URL against the trusted-endpoint allow-list of @s (full match). */
int workers_url_trusted(struct mlr_settings *s, const char *url, struct workers_error *e);

/**
 * Validates a connector body (create, merged update, or inline) against the rules of ML Commons
 * (reference §4.1–§4.3) and builds its canonical document without the credential: parameters as
 * strings, version as a string, action types upper-case, client_config with defaults.
 * @cred_keys: an object whose keys are the credential names (the plaintext map on create, the
 * encrypted map on update). Returns MLR_OK with *@out owned by the caller, or MLR_EINVAL with @e.
 */
int workers_connector_build(struct json_object *body, struct json_object *cred_keys,
                            struct mlr_settings *s, int64_t created, int64_t now,
                            struct json_object **out, struct workers_error *e);

/** The credential object with every value converted to a string (NULL if not an object). */
struct json_object *workers_credential_strings(struct json_object *cred);

/**
 * Seals every value of the plaintext credential map @plain with the master key, binding each to
 * "<owner>:<name>" (owner: "connector:<id>" or "model:<id>"), and writes the JSON text of the
 * sealed map to *@out (heap). Returns MLR_OK or the mlr_secret_encrypt() error.
 */
int workers_credential_encrypt(const unsigned char *key, const char *owner,
                               struct json_object *plain, char **out);

/* ------------------------------------------------------------------------------------------ */
/* Model groups and models: validation and stored documents (models.c). Pure; any thread.      */
/* ------------------------------------------------------------------------------------------ */

/** Checks a custom document id (`^[a-zA-Z0-9][a-zA-Z0-9_-]*$`, at most 512 bytes). */
int workers_id_valid(const char *id);

/**
 * Validates a model-group register body and builds the stored document (name, latest_version 0,
 * description, access "public", times). Returns MLR_OK with *@out, or MLR_EINVAL with @e.
 */
int workers_group_build(struct json_object *body, int64_t now, struct json_object **out,
                        struct workers_error *e);

/** What a model register body resolves to. Heap members are owned by the struct. */
struct workers_model {
    struct json_object *doc;         /* model document (model_group_id/model_version filled later) */
    struct json_object *group_doc;   /* document for an auto-created group */
    struct json_object *credential;  /* inline connector's plaintext credential, or NULL */
    const char *connector_id;        /* borrowed from the body, or NULL */
    const char *group_id;            /* borrowed from the body, or NULL */
    const char *model_id;            /* borrowed custom id, or NULL */
};

/** Validates a remote-model register body (reference §6.1). */
int workers_model_build(struct json_object *body, struct mlr_settings *s, int64_t now,
                        struct workers_model *out, struct workers_error *e);

/** Releases what workers_model_build() allocated; accepts a zeroed struct. */
void workers_model_cleanup(struct workers_model *m);

/** Arguments of the update patches below; built on the loop thread, used on the writer. */
struct workers_patch {
    const char *id;                  /* the document being updated (for messages) */
    struct json_object *body;        /* the request body (borrowed; outlives the write) */
    struct mlr_settings *settings;   /* a reference, released by the caller after the write */
    char *credential;                /* new encrypted credential map, or NULL to keep it */
    int64_t now;                     /* epoch ms for last_updated_time */
    struct workers_error error;      /* filled when the patch refuses */
};

/* store_patch_fn implementations (see store.h). */
int workers_group_patch(struct json_object *doc, char **credential, void *arg, char *err,
                        size_t errlen);
int workers_connector_patch(struct json_object *doc, char **credential, void *arg, char *err,
                            size_t errlen);
int workers_model_patch(struct json_object *doc, char **credential, void *arg, char *err,
                        size_t errlen);

/* ------------------------------------------------------------------------------------------ */
/* Tasks and deployments (workers.c, deploy.c). Loop thread unless noted.                      */
/* ------------------------------------------------------------------------------------------ */

/**
 * Start-up, before the listener opens: redeploys every model stored DEPLOYED (when
 * model_auto_redeploy.enable; else they become DEPLOY_FAILED), re-runs tasks a previous process
 * left RUNNING, and starts the task queue. @master_key must outlive @w.
 */
int workers_start(struct workers *w, struct store *s, const unsigned char *master_key,
                  const char *node_id, char *err, size_t errlen);

typedef void (*workers_stopped_cb)(void *data);

/** Stops the task queue; @cb runs once no task is in flight (the store must stay open until). */
void workers_stop(struct workers *w, workers_stopped_cb cb, void *data);

/** New task rows were committed: run them now. */
void workers_kick(struct workers *w);

/** Calls @cb when task @task_id finishes (final state) or after @timeout_ms (state NULL). */
void workers_wait(struct workers *w, const char *task_id, int64_t timeout_ms, queue_wait_cb cb,
                  void *data);

/** This node's id. */
const char *workers_node_id(const struct workers *w);

/** A deployed remote model in memory (opaque; reference counted, any thread). */
struct deployment;

/** The deployment of @model_id, or NULL when it is not deployed here (borrowed). */
struct deployment *workers_deployment_get(struct workers *w, const char *model_id);
struct deployment *workers_deployment_ref(struct deployment *d);
/** Drops a reference; the last one wipes the decrypted credentials. Accepts NULL. */
void workers_deployment_unref(struct deployment *d);

/** Removes @model_id's deployment from memory (after its UNDEPLOYED state committed). */
void workers_undeploy_local(struct workers *w, const char *model_id);

/** How many models are deployed in memory. */
int workers_deployed_count(const struct workers *w);

typedef void (*workers_reloaded_cb)(void *data);

/**
 * Hot reload after an update committed: redeploys every deployed model that uses connector
 * @connector_id, and model @model_id if it is deployed (either may be NULL). @cb runs once the
 * new deployments are installed (or failed, or after 3 s); at once when nothing is deployed.
 */
void workers_reload(struct workers *w, const char *connector_id, const char *model_id,
                    workers_reloaded_cb cb, void *data);

/* ------------------------------------------------------------------------------------------ */
/* Predict (predict.c). Loop thread.                                                          */
/* ------------------------------------------------------------------------------------------ */

/**
 * Completion of a predict: @response ({"inference_results":[...]}, borrowed) on success, else
 * @e with the status, type and reason to answer.
 */
typedef void (*workers_predict_cb)(struct json_object *response, const struct workers_error *e,
                                   void *data);

/**
 * Runs a predict of @body ({"parameters":{...}} or {"text_docs":[...]}) on model @model_id,
 * deploying it first when it is not deployed here and auto-deploy allows it (reference §11).
 * @cb is called exactly once.
 */
void workers_predict(struct workers *w, const char *model_id, struct json_object *body,
                     workers_predict_cb cb, void *data);

/* ------------------------------------------------------------------------------------------ */
/* Upstream HTTP (http.c): libcurl multi-socket on the libuv loop. Loop thread only.           */
/* ------------------------------------------------------------------------------------------ */

struct workers_http;
struct curl_slist;

/** One upstream call. The caller owns it and keeps it alive until done() ran. */
struct workers_http_req {
    /* request */
    const char *method;             /* "POST", "GET", ... */
    const char *url;
    struct curl_slist *headers;     /* built with workers_http_header_append(); freed by cleanup */
    const char *body;               /* may be NULL */
    size_t body_len;
    long connect_timeout_ms;
    long timeout_ms;                /* whole transfer */
    int skip_verify;                /* accept any TLS certificate (connector's choice) */
    int allow_private;              /* connector.private_ip_enabled */
    size_t max_body;                /* response cap in bytes; 0 = none */
    char aws_sigv4[160];            /* "aws:amz:<region>:<service>" or "" */
    const char *aws_key;            /* with aws_sigv4 */
    const char *aws_secret;
    void (*done)(struct workers_http_req *r, void *data); /* loop thread, exactly once */
    void *data;
    /* response */
    long status;                    /* HTTP status, 0 when none arrived */
    int curl_code;                  /* 0 = transfer completed */
    struct mlr_buf response;        /* body (capped) */
    char errbuf[256];               /* transport error text */
    char retry_after[64];           /* Retry-After header, "" if absent */
    char amzn_error[64];            /* x-amzn-ErrorType header, "" if absent */
    int too_big;                    /* the body passed max_body */
    int private_refused;            /* the address connected to is private and not allowed */
    void *_easy;                    /* private */
};

typedef void (*workers_http_closed_cb)(void *data);

struct workers_http *workers_http_new(uv_loop_t *loop);
/** Starts @r. On an error return done() is never called. */
int workers_http_start(struct workers_http *h, struct workers_http_req *r);
/** Frees the response buffer and header list of @r (after done()). */
void workers_http_req_cleanup(struct workers_http_req *r);
/** Appends a "Name: value" header line; returns the new list. */
void *workers_http_header_append(void *list, const char *line);
/** The transport error message of a failed transfer. */
const char *workers_http_error(const struct workers_http_req *r);
/** Whether a failed transfer timed out. */
int workers_http_timed_out(const struct workers_http_req *r);
/** 1 when @ip (text form) is loopback, private, link-local, unique-local or any-local. */
int workers_ip_is_private(const char *ip);
/** Closes the client once no transfer is in flight (call after every request finished). */
void workers_http_close(struct workers_http *h, workers_http_closed_cb cb, void *data);

#endif /* MLR_WORKERS_H */
