/*
 * workers.h — the execution side of mlrelay: the current cluster-settings snapshot, connector and
 * model validation, the task runner and in-memory deployments, and the predict engine (connector
 * templates, pre/post-processing, libcurl multi-socket on the loop).
 *
 * Threading: workers_settings_get() and the pure validation/template/process functions may be
 * called from any thread; everything else on the loop thread unless its comment says otherwise.
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
/* Callers (spec §8, reference §12.1)                                                          */
/* ------------------------------------------------------------------------------------------ */

/** The authenticated caller of a request, or NULL everywhere when no users are configured. */
struct workers_user {
    const char *name;
    const char *const *backend_roles; /* nbackend_roles strings */
    int nbackend_roles;
    const char *const *roles;         /* nroles strings */
    int nroles;
    int admin;                        /* holds role all_access */
};

/** Who writes, and which access control applies (with users only; reference §12). */
struct workers_caller {
    const struct workers_user *user; /* NULL: no users configured */
    int model_ac;                    /* plugins.ml_commons.model_access_control_enabled */
    int connector_ac;                /* plugins.ml_commons.connector_access_control_enabled */
};

/* ------------------------------------------------------------------------------------------ */
/* Connectors: validation and the stored document (connector.c). Pure; any thread.             */
/* ------------------------------------------------------------------------------------------ */

/** A refusal with the HTTP status, OpenSearch error type and reason the API answers with. */
struct workers_error {
    int status;          /* HTTP status, e.g. 400 */
    const char *type;    /* static, e.g. "illegal_argument_exception" */
    char reason[1024];   /* exact ML Commons wording where it has one */
};

/** Fills @e (reason printf-style) and returns MLR_EINVAL, for `return workers_error_set(...)`. */
int workers_error_set(struct workers_error *e, int status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/** va_list form of workers_error_set(). */
int workers_error_vset(struct workers_error *e, int status, const char *type, const char *fmt,
                       va_list ap) __attribute__((format(printf, 4, 0)));

/* The access fields of model groups and connectors (access.c). Pure; any thread. Each returns
 * MLR_OK or MLR_EINVAL with @e (400, ML Commons' messages). */

/** A new owner object for @u as ML Commons stores it (name, backend_roles, roles, ...). */
struct json_object *workers_owner_new(const struct workers_user *u);
/** Model group register: validates @body's access_mode/backend_roles/add_all_backend_roles for
 * @who and writes access, backend_roles and owner into @doc (reference §3.1). */
int workers_group_access_set(struct json_object *body, const struct workers_caller *who,
                             struct json_object *doc, struct workers_error *e);
/** Model group update: applies @body's access fields to stored @doc (reference §3.4). */
int workers_group_access_update(struct json_object *body, const struct workers_caller *who,
                                struct json_object *doc, struct workers_error *e);
/** Connector create: as workers_group_access_set() with the connector rules (§12.3). */
int workers_connector_access_set(struct json_object *body, const struct workers_caller *who,
                                 struct json_object *doc, struct workers_error *e);
/** Connector update: carries owner/access/backend_roles of stored @base into rebuilt @doc and
 * applies @body's access fields. */
int workers_connector_access_update(struct json_object *body, const struct workers_caller *who,
                                    struct json_object *base, struct json_object *doc,
                                    struct workers_error *e);
/** Refuses any access field in @body with the "disabled" message of connectors (@connector) or
 * model groups. */
int workers_access_fields_refuse(struct json_object *body, int connector,
                                 struct workers_error *e);

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
int workers_group_build(struct json_object *body, const struct workers_caller *who, int64_t now,
                        struct json_object **out, struct workers_error *e);

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
int workers_model_build(struct json_object *body, const struct workers_caller *who,
                        struct mlr_settings *s, int64_t now, struct workers_model *out,
                        struct workers_error *e);

/** Releases what workers_model_build() allocated; accepts a zeroed struct. */
void workers_model_cleanup(struct workers_model *m);

/** Arguments of the update patches below; built on the loop thread, used on the writer. */
struct workers_patch {
    const char *id;                  /* the document being updated (for messages) */
    struct json_object *body;        /* the request body (borrowed; outlives the write) */
    struct mlr_settings *settings;   /* a reference, released by the caller after the write */
    char *credential;                /* new encrypted credential map, or NULL to keep it */
    int64_t now;                     /* epoch ms for last_updated_time */
    const struct workers_caller *who; /* the caller (request pool; outlives the write) */
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
/* Batch ingestion jobs (batch.c, spec §7)                                                    */
/* ------------------------------------------------------------------------------------------ */

#define WORKERS_BATCH_SIZE 32        /* default batch_size: items per batch */
#define WORKERS_BATCH_CONCURRENCY 8  /* default max_concurrency: batches in flight per job */
#define WORKERS_BATCH_RETRIES 3      /* default max_retries per failed predict */

/**
 * Validates a `_batch_ingest` body ({"text_docs": [strings]} or {"inputs": [{"parameters":
 * {...}}]}, optional batch_size 1-10000, max_concurrency 1-1024, max_retries 0-100; nothing
 * else) and writes the task's input text (defaults filled in) to *@input (heap) and the item
 * count to *@total. Returns MLR_OK, or MLR_EINVAL with @e (400). Pure; any thread.
 */
int workers_batch_ingest_build(struct json_object *body, char **input, int64_t *total,
                               struct workers_error *e);

/** A BATCH_INGEST task was cancelled (committed): its job, if running here, stops. */
void workers_batch_cancelled(struct workers *w, const char *task_id);
/* Offline batch predict (batch_predict.c, poller.c; reference §6.9). Loop thread unless noted.        */
/* ------------------------------------------------------------------------------------------ */

/**
 * `_batch_predict` on model @model_id with @body ({"parameters":{...}}, optional
 * "dlq":{"bucket","region"}; borrowed): checks offline_batch_inference_enabled (400
 * illegal_state_exception), the dlq (400) and max_batch_inference_tasks against the open
 * BATCH_PREDICTION tasks (429), runs the connector's batch_predict action like a predict
 * (auto-deploying the model), and stores a BATCH_PREDICTION task whose remote_job is the
 * provider's answer (plus dlq). @cb gets {"task_id","status":"CREATED","remote_job"} once the
 * task is committed, or the error: the predict engine's refusals, 404 "Unable to create batch
 * transform job" when the provider did not accept the job. Called exactly once.
 */
void workers_batch_predict(struct workers *w, const char *model_id, struct json_object *body,
                           workers_predict_cb cb, void *data);

/**
 * Completion of workers_batch_cancel(): @handled 0 means the task is not a BATCH_PREDICTION
 * task (the caller cancels it its usual way; @e is NULL). Otherwise @e is NULL when the
 * provider accepted the cancel, else the error to answer.
 */
typedef void (*workers_batch_cancel_cb)(int handled, const struct workers_error *e, void *data);

/**
 * Cancels task @task_id at its provider when it is a BATCH_PREDICTION task, through the
 * connector's cancel_batch_predict action (or the synthesised one). The task's state is left to
 * the poller, which sees the provider's cancelling/cancelled status. @cb is called exactly once.
 */
void workers_batch_cancel(struct workers *w, const char *task_id, workers_batch_cancel_cb cb,
                          void *data);

/**
 * The action of @type ("BATCH_PREDICT_STATUS" or "CANCEL_BATCH_PREDICT") to run for a batch job
 * of @connector: the connector's own, else one synthesised from its batch_predict action as ML
 * Commons does: a URL (connector parameters substituted) containing "sagemaker" gets
 * CreateTransformJob replaced by DescribeTransformJob/StopTransformJob, POST, body
 * {"TransformJobName"}; "openai" or "cohere": GET <url>/${parameters.id}, POST .../cancel;
 * "bedrock": GET <url>/${parameters.processedJobArn}, POST .../stop; the first name found wins,
 * in that order. Headers are the batch_predict action's. Returns MLR_OK with *@out a new
 * reference, or MLR_EINVAL with @e (400): no batch_predict action, or an unknown provider
 * ("Please configure the action type to get the batch job details in the connector", or "... to
 * cancel the batch job ..."). Pure; any thread.
 */
int workers_batch_action(struct json_object *connector, const char *type,
                         struct json_object **out, struct workers_error *e);

/**
 * The request parameters of a status or cancel call: @request_params (the batch predict's, may
 * be NULL), overlaid by every string member of @remote_job, plus TransformJobName (the last
 * '/'-segment of TransformJobArn) and processedJobArn (jobArn percent-encoded) when absent.
 * Connector parameters come below these when the call is rendered. Returns a new object. Pure.
 */
struct json_object *workers_batch_params(struct json_object *request_params,
                                         struct json_object *remote_job);

/**
 * The task state a provider job status maps to: the value of the first member of @remote_job
 * named in remote_job.status_field, matched (anywhere, ignoring case) against the
 * status_regex settings in the order cancelling, cancelled, completed, expired, failed.
 * Returns "CANCELLING", ..., or NULL when no field is present or nothing matches (the state is
 * kept). Pure; any thread.
 */
const char *workers_batch_state(struct mlr_settings *s, struct json_object *remote_job);

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
    long read_timeout_s;            /* longest silence from the upstream, seconds (0 = none) */
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
    int64_t _silent_since;          /* private: monotonic ms of the last byte received */
    struct workers_http_req *_prev; /* private: the client's list of transfers in flight */
    struct workers_http_req *_next;
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

/* ------------------------------------------------------------------------------------------ */
/* Built-in pre/post-process functions and JSONPath (process.c). Pure; any thread.             */
/* ------------------------------------------------------------------------------------------ */

/**
 * Evaluates the JSONPath @path (the subset of Jayway JsonPath that response_filter needs: `$`,
 * `.field`, `['field']` or `["field"]`, `[n]` with n < 0 counting from the end, `[*]` and `.*`;
 * a path without a leading `$` is read as `$.` + path) against @root (borrowed).
 * A definite path (no wildcard) yields the one value it names; an indefinite path yields a new
 * array of every match, flattened, in document order (possibly empty), as Jayway does.
 * Returns MLR_OK with *@out a new reference the caller puts (NULL when the value is JSON null);
 * MLR_ENOTFOUND when a definite path, or the definite part before the first wildcard, names
 * nothing (@e: 404 with Jayway's "No results for path" wording); MLR_EINVAL for bad or
 * unsupported syntax, or a path over 1024 bytes or 64 steps (@e: 400). *@out is written only on
 * success. Iterative: no recursion whatever the depth of @root.
 */
int workers_jsonpath(struct json_object *root, const char *path, struct json_object **out,
                     struct workers_error *e);

/**
 * Runs the built-in pre-process function @fn (NULL = connector.pre_process.default.embedding)
 * over a neural-search style input: @text_docs, a non-empty JSON array of strings (borrowed),
 * and, for the rerank functions, @query_text. Writes to *@requests a new JSON array with one
 * object per upstream request; its values are JSON strings ready to be substituted verbatim
 * (strings already escaped as JSON string contents, lists as compact JSON text):
 *   openai/default .embedding   {"input": "[\"a\",\"b\"]"}           all docs in one request
 *   cohere.embedding            {"texts": "[...]"}
 *   bedrock.embedding           {"inputText": "a"}                   one request per doc
 *   cohere/default .rerank      {"query": q, "documents": "[...]", "top_n": "<#docs>"}
 *   bedrock.rerank              {"queries": "[{...}]", "sources": "[{...}]",
 *                                "numberOfResults": "<#docs>"}
 * @query_text is ignored by the embedding functions.
 * Returns MLR_OK, or MLR_EINVAL with @e (400): unknown @fn, missing or empty text_docs ("Empty
 * text docs"), a doc that is not a string, rerank without @query_text. *@requests is written
 * only on success; the caller puts it.
 */
int workers_preprocess(const char *fn, struct json_object *text_docs, const char *query_text,
                       struct json_object **requests, struct workers_error *e);

/**
 * workers_preprocess() with input_docs_processed_step_size: the batched embedding functions
 * send @step docs per request (the last request takes the rest). @step 0 means the parameter is
 * not set (one request); a negative @step is refused with 400 "Invalid parameter:
 * input_docs_processed_step_size. It must be positive integer.". Bedrock embedding always sends
 * one doc per request and rerank always sends every doc in one request (the upstream ranks them
 * together), so for those a positive @step only has to be valid.
 */
int workers_preprocess_step(const char *fn, struct json_object *text_docs, const char *query_text,
                            int step, struct json_object **requests, struct workers_error *e);

/**
 * Parses the input_docs_processed_step_size parameter value @s as Java's Integer.parseInt does.
 * @s NULL (parameter not set) gives 0. Returns MLR_OK with *@out, or MLR_EINVAL with @e (400):
 * "For input string: ..." when @s is not an int, the positive-integer message when it is <= 0.
 */
int workers_step_parse(const char *s, int *out, struct workers_error *e);

/**
 * Turns one upstream response into the "output" array of one inference_results element.
 * @response is the parsed upstream body (a JSON string object for a body that is not JSON;
 * NULL for a JSON null), borrowed. @filter is the response_filter parameter (NULL or blank =
 * none). @ndocs is the number of docs sent (rerank: the number of similarity tensors; 0 = as
 * many as results).
 *   @fn NULL: one tensor {"name":"response","dataAsMap":X}, X = the filtered value (the whole
 *   response when the filter names nothing): an object as-is, a string holding a JSON object
 *   parsed (one holding an array becomes {"response":[...]}), anything else {"response":value}.
 *   Embedding functions: the function's JSONPath (or @filter) selects the vectors; one
 *   {"name":"sentence_embedding","data_type":T,"shape":[dim],"data":[...]} per vector (bedrock:
 *   the one vector). T is FLOAT32 unless the path names a type (".int8" -> INT8, ...).
 *   Rerank functions: one {"name":"similarity","data_type":"FLOAT32","shape":[1],"data":[s]}
 *   per doc, placed by the result's "index"; a doc without a result gets data [null].
 * Doubles are written in their shortest round-trip form; integers are kept as they are.
 * Returns MLR_OK with *@output (a new array the caller puts); MLR_EINVAL with @e 400 for an
 * unknown @fn, a bad @filter, or the built-ins' validation messages ("Post process function input
 * is not a List.", "The embedding should be a non-empty List containing Float values.", ...);
 * MLR_EINTERNAL with @e 500 m_l_exception "Fail to execute predict in aws connector" for any
 * other failure (the path names nothing, wrong types further in). *@output only on success.
 */
int workers_postprocess(const char *fn, const char *filter, struct json_object *response,
                        int ndocs, struct json_object **output, struct workers_error *e);

/* ------------------------------------------------------------------------------------------ */
/* Templates: the parameter map, substitution, and checks on the result (template.c, reference */
/* §5.1-§5.5). Pure; any thread.                                                              */
/* ------------------------------------------------------------------------------------------ */

#define WORKERS_TEMPLATE_MAX_BYTES ((size_t)16 << 20) /* bytes one merge or render may produce */
#define WORKERS_TEMPLATE_MAX_DEPTH 32 /* nested substitutions (connector parameter chains) */
#define WORKERS_HEADER_MAX_BYTES 8192 /* one rendered header, name + value, bytes */

/**
 * Builds the parameter map of one remote call (reference §5.1-§5.2): a new json-c object whose
 * values are JSON strings ready to substitute, or JSON null (absent for substitution).
 *
 * Layers, lowest first: @connector_params (stored text, not escaped), @preprocess_params (what a
 * pre-process function produced, inserted as is), @request_params (converted by the ORIGINAL
 * JSON type: a string is escaped as JSON string contents like Commons Text escapeJson(), with
 * every non-ASCII character as \uXXXX; an object or array becomes compact JSON; a number takes
 * ML Commons' stored form, see workers_param_string(); a boolean "true"/"false"; null stays
 * null). A request string whose key is listed in `no_escape_params` (comma-separated, read from
 * the winning layer) is inserted verbatim. Request values always win.
 *
 * Connector values that hold placeholders are then resolved against the map, recursively through
 * other connector values, with request and pre-process values as inert leaves: text that came
 * from a request is never expanded (no template injection). Every value of *@out is final.
 *
 * Any argument may be NULL (empty); @connector_params and @preprocess_params must be objects.
 * Returns MLR_OK with *@out owned by the caller (json_object_put()), or MLR_EINVAL with @e
 * (400 illegal_argument_exception): @request_params not an object, a request string that is not
 * valid UTF-8 or escapes past WORKERS_TEMPLATE_MAX_BYTES, a cycle among connector parameters
 * ("Infinite loop in property interpolation of ${parameters.a}: a->b->a"), a chain deeper than
 * WORKERS_TEMPLATE_MAX_DEPTH, or more than WORKERS_TEMPLATE_MAX_BYTES of resolved text.
 */
int workers_params_merge(struct json_object *connector_params, struct json_object *request_params,
                         struct json_object *preprocess_params, struct json_object **out,
                         struct workers_error *e);

/**
 * Substitutes placeholders in @tmpl (reference §5.3) in one pass: `${parameters.NAME}` (NAME
 * looked up literally in @params, dots included), `${parameters.NAME:-default}`, the quoted
 * `"${parameters.NAME:-null}"` (-> null when NAME is absent or null), and
 * `${parameters.NAME.toString()}` (NAME's value escaped as JSON string contents; works directly
 * in templates too, unlike ML Commons). `$${parameters.` escapes a placeholder. When @credential
 * is non-NULL (headers), `${credential.NAME}` is substituted from it too. Substituted values are
 * never rescanned: @params should come from workers_params_merge(), which resolved them.
 * Unresolved placeholders stay literal; check the result with workers_body_check() or
 * workers_header_check().
 *
 * Returns MLR_OK with *@out a heap string the caller frees, or MLR_EINVAL with @e (400): output
 * past WORKERS_TEMPLATE_MAX_BYTES, a value holding a NUL byte, or invalid UTF-8 under
 * .toString(). @params and @credential may be NULL.
 */
int workers_template_render(const char *tmpl, struct json_object *params,
                            struct json_object *credential, char **out, struct workers_error *e);

/**
 * Checks a rendered request body: it must be one JSON object or array, or NDJSON (every
 * non-blank line one), else 400 "Invalid payload: <body>"; and it must not contain
 * `${parameters.`, else 400 "Some parameter placeholder not filled in payload: a, b" (names in
 * order, once each), unless @params has skip_validating_missing_parameters "true". Callers that
 * want ML Commons' "Content length is 0" answer test for an empty body first. Returns MLR_OK or
 * MLR_EINVAL with @e.
 */
int workers_body_check(const char *body, struct json_object *params, struct workers_error *e);

/**
 * Checks one rendered header: @name an HTTP token; no `${` left in @value ("Header '<h>' contains
 * unresolved placeholder. Required parameter is missing."); no control character but TAB, and no
 * DEL ("Header value contains invalid control character"); name plus value at most
 * WORKERS_HEADER_MAX_BYTES. The 64 KB total over all headers is the caller's. Returns MLR_OK or
 * MLR_EINVAL with @e (400).
 */
int workers_header_check(const char *name, const char *value, struct workers_error *e);

#endif /* MLR_WORKERS_H */
