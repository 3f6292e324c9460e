/*
 * api_int.h — internals shared by the files of api/: connections, requests, the route table and
 * the response helpers. Nothing outside api/ includes this.
 */
#ifndef MLR_API_INT_H
#define MLR_API_INT_H

#include <http_parser.h>
#include <json-c/json.h>

#include "api.h"

struct api_req;
struct api_conn;

/* A request handler: must eventually call exactly one api_send_*() for @req. */
typedef void (*api_handler_fn)(struct api_req *req);

enum api_route_flags {
    API_BODY_NONE = 0,        /* a body, if any, is ignored */
    API_BODY_JSON = 1 << 0,   /* a body, if present, must be a JSON object (parsed into req->json) */
    API_BODY_REQUIRED = 1 << 1, /* with API_BODY_JSON: an empty body is a 400 */
};

/* One row of the route table (api/routes.c). */
struct api_route {
    unsigned methods;         /* bit mask of 1 << HTTP_xxx; GET routes also answer HEAD */
    const char *pattern;      /* "/_plugins/_ml/models/{model_id}/_deploy" */
    api_handler_fn handler;
    int64_t max_body;         /* bytes; 0 = the node's http.max_content_length */
    unsigned flags;           /* enum api_route_flags */
    int kind;                 /* enum store_kind for the shared document handlers */
    const char *empty_body;   /* reason for a missing required body (parse_exception) */
};

#define API_MAX_PARAMS 4
#define API_MAX_HEADERS 100

struct api_header {
    char *name;   /* as sent */
    char *value;  /* as sent */
};

struct api_req {
    struct mlr_pool pool;             /* everything below that is allocated lives here */
    struct api_conn *conn;            /* NULL once the client went away */
    struct api_server *srv;
    const struct api_context *ctx;
    enum http_method method;
    int head;                         /* HEAD: send headers only */
    int keep_alive;                   /* connection stays open after the response */
    char *target;                     /* request-target as sent ("/a/b?x=1") */
    char *path;                       /* raw path part of target */
    char *query;                      /* raw query string, NULL if none */
    struct api_header headers[API_MAX_HEADERS];
    int nheaders;
    struct mlr_buf body;              /* decoded body, capped at the route's limit */
    struct json_object *json;         /* parsed body (API_BODY_JSON routes), owned */
    const struct api_route *route;    /* matched route, NULL if none */
    unsigned allow;                   /* methods of routes matching the path (for 405) */
    const char *params[API_MAX_PARAMS]; /* percent-decoded {name} segments, route order */
    int nparams;
    int pretty;                       /* ?pretty */
    int responded;                    /* an api_send_*() happened */
    int64_t start_ms;                 /* monotonic, first byte seen */
};

/* ---------------------------------- responses (response.c) ---------------------------------- */

/** Sends @status with the JSON @body (consumed: the function puts it). */
void api_send_json(struct api_req *req, int status, struct json_object *body);

/**
 * Sends the OpenSearch error envelope
 * {"error":{"root_cause":[{"type","reason"}],"type","reason"},"status"}.
 */
void api_send_error(struct api_req *req, int status, const char *type, const char *reason);

/** Builds the OpenSearch error envelope as a new object the caller owns. */
struct json_object *api_error_body(int status, const char *type, const char *reason);

/** printf-style api_send_error(). */
void api_send_errorf(struct api_req *req, int status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/** Maps an mlr_err to the HTTP status the API answers with. */
int api_status_from_err(int err);

/** The reason phrase of @status ("Not Found"). */
const char *api_status_text(int status);

/**
 * Serialises @body as the response text (pretty when ?pretty) into a new buffer owned by the
 * caller. Used by api_send_json() and by connection-level errors.
 */
void api_render(struct json_object *body, int pretty, struct mlr_buf *out);

/* ---------------------------------- requests (routes.c) ---------------------------------- */

/** The value of header @name (case-insensitive) or NULL. */
const char *api_header(const struct api_req *req, const char *name);

/**
 * The percent-decoded value of query parameter @name, "" when present without a value, NULL when
 * absent. Allocated from the request pool.
 */
const char *api_query(struct api_req *req, const char *name);

/** 1 when query flag @name is present and not "false". */
int api_query_bool(struct api_req *req, const char *name);

/**
 * Finds the route for req->path and req->method: sets req->route (NULL when none), req->params,
 * and req->allow. Called when the headers are complete, so the body limit is known early.
 */
void api_route_match(struct api_req *req);

/** Runs the central checks (405, unknown path, JSON body) and then the handler. */
void api_dispatch(struct api_req *req);

/* ---------------------------------- connection (conn.c / server.c) ---------------------------------- */

/** Writes the response bytes for @req (headers built here) and finishes the request. */
void api__conn_respond(struct api_req *req, int status, const char *extra_headers,
                       struct mlr_buf *body);

/** Server-level limits, read by conn.c. */
const struct mlr_config *api__server_config(const struct api_server *srv);
const struct api_context *api__server_context(const struct api_server *srv);

/* One client connection (conn.c). */
enum timer_mode { TIMER_IDLE, TIMER_REQUEST, TIMER_LINGER };

struct api_conn {
    uv_tcp_t tcp;                 /* the client socket */
    uv_timer_t timer;             /* idle, request or linger deadline (see mode) */
    enum timer_mode mode;         /* what the timer means now */
    struct api_server *srv;
    http_parser parser;
    struct api_req *req;          /* request being parsed or handled, NULL between requests */
    int dispatched;               /* req is with a handler (parser paused) */
    struct mlr_buf pending;       /* received but not yet parsed */
    struct mlr_buf url;           /* request-target being parsed */
    struct mlr_buf field;         /* header name being parsed */
    struct mlr_buf value;         /* header value being parsed */
    int in_value;                 /* last header callback was a value */
    size_t header_bytes;          /* request line + headers so far */
    int64_t max_body;             /* limit for the current request */
    int error_status;             /* set by a parser callback that hit a limit (413, 431) */
    int reading;                  /* uv_read_start is in effect */
    int eof;                      /* the client shut down its write side */
    int closing;                  /* handles are being closed */
    int handles;                  /* open handles (tcp, timer) */
    int writes;                   /* uv_write requests in flight */
    int close_after_write;        /* shut down once the queued writes finish */
    int linger;                   /* after shutdown, drain input until EOF or timeout */
    int stop_requested;           /* server is stopping: close after the current response */
    int reject;                   /* over the connection cap: answer 429 and close */
    struct api_conn *prev, *next; /* the server's list of open connections */
};

/* Creates a connection with its tcp and timer handles initialised on @loop (not yet accepted). */
struct api_conn *api__conn_new(struct api_server *srv, uv_loop_t *loop, int reject);
/* Starts serving an accepted connection (or answers 429 when it was created to be rejected). */
void api__conn_start(struct api_conn *c);
/* Closes the connection now. */
void api__conn_close(struct api_conn *c);
/* Server stop: close now when idle, else after the response in progress. */
void api__conn_stop(struct api_conn *c);
/* conn.c tells server.c that a connection is gone (its handles are closed). */
void api__server_conn_gone(struct api_server *srv, struct api_conn *c);
/*
 * Test seam: a server without a listener, so connections made with api__conn_new() can be fed
 * bytes with no socket (tests/fuzz/fuzz_http.c). @cfg is borrowed, @ctx copied. Freed with
 * api__server_free_detached() once its connections are gone.
 */
struct api_server *api__server_new_detached(uv_loop_t *loop, const struct mlr_config *cfg,
                                            const struct api_context *ctx);
void api__server_free_detached(struct api_server *srv);

/**
 * Sends OpenSearch's write response ({"_index","_id","_version","result","_shards",
 * "_seq_no","_primary_term"}) for a document of @kind.
 */
void api_send_write(struct api_req *req, int status, enum store_kind kind, const char *id,
                    int64_t version, int64_t seq_no, const char *result);

/** Sends a workers_error as an OpenSearch error. */
void api_send_workers_error(struct api_req *req, const struct workers_error *e);

/** Path parameter @i when it can be a stored id (at most STORE_ID_MAX bytes), else NULL. */
const char *api_path_id(const struct api_req *req, int i);

/** 1 when @sa is a loopback address (127.0.0.0/8, ::1, or IPv4-mapped 127.x). */
int api_addr_is_loopback(const struct sockaddr *sa);

/* Handlers (h_*.c). */
void api_h_root(struct api_req *req);
void api_h_settings_get(struct api_req *req);
void api_h_settings_put(struct api_req *req);
void api_h_doc_get(struct api_req *req);
void api_h_doc_delete(struct api_req *req);
void api_h_doc_search(struct api_req *req);
void api_h_group_register(struct api_req *req);
void api_h_group_update(struct api_req *req);
void api_h_connector_create(struct api_req *req);
void api_h_connector_update(struct api_req *req);
void api_h_model_register(struct api_req *req);
void api_h_model_update(struct api_req *req);
void api_h_model_deploy(struct api_req *req);
void api_h_model_undeploy(struct api_req *req);
void api_h_models_undeploy(struct api_req *req);
void api_h_task_cancel(struct api_req *req);
void api_h_model_predict(struct api_req *req);
void api_h_algorithm_predict(struct api_req *req);
void api_h_model_batch_ingest(struct api_req *req);
void api_h_task_results(struct api_req *req);
void api_h_model_batch_predict(struct api_req *req);

/** The register response {"task_id","status":"CREATED","model_id"}. */
void api_send_registered(struct api_req *req, const char *task_id, const char *model_id);

/** `_register?deploy=true`: starts a deploy of the just-registered model, then answers the
 * register request once that is committed too. */
void api_deploy_chain(struct api_req *req, const char *model_id, const char *register_task_id);

#endif /* MLR_API_INT_H */
