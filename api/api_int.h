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

/*
 * An access guard of a route (access.c): when access control restricts the caller, the document
 * named by path parameter @param must be one the caller may use, else the route answers
 * @status/@type/@reason (followed by the id when @append_id).
 */
struct api_guard {
    int kind;                 /* enum store_kind of the document */
    int param;                /* index in req->params of its id */
    int status;
    const char *type;
    const char *reason;
    int append_id;
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
    const struct api_guard *guard; /* access check before the handler, or NULL */
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
    struct api_server *srv;           /* may be freed before a detached request is answered */
    const struct api_context *ctx;    /* &ctx_copy */
    struct api_context ctx_copy;      /* the server's context: valid after the server is freed */
    const struct mlr_config *cfg;     /* node config (owned by main(), outlives the server) */
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
    uint64_t start_ns;                /* uv_hrtime() at the first byte: access-log duration */
    char client[48];                  /* the client's IP address (copied from the connection) */
    int loopback;                     /* the client is on a loopback address */
    struct workers_user *user;        /* the authenticated caller; NULL without users */
    struct workers_caller caller;     /* api_req_caller(), filled on first use */
    int caller_ready;
    struct store_access access;       /* api_req_access(), filled on first use */
    void *handler_data;               /* a handler's state between its asynchronous steps; the
                                       * handler frees it before answering */
};

/* ---------------------------------- commands (cli_users.c) ---------------------------------- */

/** `mlrelay users ...`: the exit code (0, 1 failure, 2 usage). */
int api__cli_users(const struct mlr_config *cfg);
/** `mlrelay rotate-master-key`: the exit code. */
int api__cli_rotate_key(const struct mlr_config *cfg);

/* ---------------------------------- callers (auth.c, access.c) ---------------------------------- */

/**
 * Authenticates @req from its Authorization header: on success sets req->user and calls
 * api__dispatch_authenticated(); otherwise answers 401 (or 429 when rate-limited).
 */
void api_auth_check(struct api_auth *a, struct api_req *req);
/**
 * Before a request's body is read (users configured): 401 when its Authorization header is not
 * well-formed Basic credentials, 429 when its client is over the failed-login limit and the
 * credentials are not the cached ones, else 0. With the cached credentials it also sets
 * req->user, and the dispatcher does not check again; otherwise api_auth_check() decides.
 */
int api_auth_precheck(struct api_auth *a, struct api_req *req);
/** The dispatcher's second half: everything after authentication (routes.c). */
void api__dispatch_authenticated(struct api_req *req);

/** The caller of @req for the workers' builders (never NULL; user NULL without users). */
const struct workers_caller *api_req_caller(struct api_req *req);
/** The store_access of @req, or NULL when nothing restricts it (no users, admin, AC off). */
const struct store_access *api_req_access(struct api_req *req);
/** Runs the route's guard (if any, and if it applies), then the handler. */
void api__guard_then_handle(struct api_req *req);

/** Result of api_access_check_all(): MLR_OK, MLR_EPERM (@denied: the first id refused) or an
 * error. */
typedef void (*api_checked_cb)(struct api_req *req, int status, const char *denied);
/** Checks that the caller may use every one of @ids (borrowed until @done) of @kind. */
void api_access_check_all(struct api_req *req, enum store_kind kind, const char *const *ids,
                          int n, api_checked_cb done);

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

/* ---------------------------------- access log (access_log.c) ---------------------------------- */

/**
 * Writes the access-log line of one answered request, when log.access is on: method, path
 * (never the query string, which may carry secrets), status, response body bytes, duration in
 * milliseconds with microsecond precision, client address, and X-Opaque-Id when the client sent
 * one. @req may be NULL, or a request whose line was not parsed yet, for errors answered at the
 * connection level (429, 408, 431, 400); @client is then the connection's address.
 * @client_gone: the client left before the answer, which was therefore not sent.
 */
void api__access_log(const struct mlr_config *cfg, const struct api_req *req, const char *client,
                     int status, size_t bytes, int client_gone);

/* ---------------------------------- TLS (tls.c) ---------------------------------- */

struct api_tls_ctx;  /* the listener's certificate, key and protocol policy */
struct api_tls_conn; /* one connection's TLS session, over memory buffers */

/**
 * Loads the PEM certificate chain @cert and the unencrypted PEM key @key (paths, kept for
 * reloads) and checks that they match. Logs the certificate's subject and expiry. Returns MLR_OK
 * or MLR_EIO with OpenSSL's reason in @err (unreadable file, not PEM, encrypted or mismatched
 * key); *@out is written only on success. Free with api__tls_ctx_free().
 */
int api__tls_ctx_new(const char *cert, const char *key, struct api_tls_ctx **out, char *err,
                     size_t errlen);

/**
 * Re-reads the same two files into a new context. On success sessions created from now on use it
 * (existing ones keep the one they started with) and the certificate is logged; on failure
 * returns the error as api__tls_ctx_new() does and @t is unchanged.
 */
int api__tls_ctx_reload(struct api_tls_ctx *t, char *err, size_t errlen);

/** Frees @t (NULL is fine); sessions created from it stay valid. */
void api__tls_ctx_free(struct api_tls_ctx *t);

/** A new server-side session using @t's current certificate. Aborts on OOM. */
struct api_tls_conn *api__tls_conn_new(struct api_tls_ctx *t);

/** Frees @tc (NULL is fine) without sending anything. */
void api__tls_conn_free(struct api_tls_conn *tc);

/**
 * Hands @len bytes read from the socket to the session. Returns MLR_OK; MLR_EINVAL when the very
 * first byte shows a plain HTTP request instead of a TLS handshake (the session is then failed);
 * MLR_ENOMEM when the buffer cannot grow.
 */
int api__tls_conn_feed(struct api_tls_conn *tc, const void *data, size_t len);

/**
 * Advances the handshake and appends every byte of plaintext that the input fed so far completes
 * to @plain. Returns MLR_OK (possibly with nothing appended: a partial record, or a handshake
 * step), or an error with the reason in @err when the session failed (handshake refused, bad
 * record, @plain's cap reached); the connection must then end. Either way the session may have
 * ciphertext to send (handshake replies, an alert): call api__tls_conn_output().
 */
int api__tls_conn_read(struct api_tls_conn *tc, struct mlr_buf *plain, char *err, size_t errlen);

/**
 * Encrypts @len bytes of plaintext; the records become available through
 * api__tls_conn_output(). Only valid once api__tls_conn_established(). Returns MLR_OK or MLR_EIO
 * (the session failed).
 */
int api__tls_conn_write(struct api_tls_conn *tc, const void *data, size_t len);

/** Appends all ciphertext waiting to be sent to @out and empties the session's output. */
void api__tls_conn_output(struct api_tls_conn *tc, struct mlr_buf *out);

/** 1 once the handshake has completed. */
int api__tls_conn_established(const struct api_tls_conn *tc);

/**
 * Queues close_notify (fetch it with api__tls_conn_output()). Returns 1 when it was queued now, 0
 * when there is nothing to do (already sent, handshake unfinished, or the session failed).
 */
int api__tls_conn_shutdown(struct api_tls_conn *tc);

/** The listener's TLS context, NULL when the server speaks plaintext. */
struct api_tls_ctx *api__server_tls(const struct api_server *srv);

/* ---------------------------------- connection (conn.c / server.c) ---------------------------------- */

/** Writes the response bytes for @req (headers built here) and finishes the request. */
void api__conn_respond(struct api_req *req, int status, const char *extra_headers,
                       struct mlr_buf *body);

/** api__conn_respond() with a content type other than JSON (GET /metrics). */
void api__conn_respond_typed(struct api_req *req, int status, const char *content_type,
                             const char *extra_headers, struct mlr_buf *body);

/* ---------------------------------- HTTP metrics (http_stats.c) ---------------------------------- */

struct api_http_stats;

/** Creates the HTTP request counters for the route table (one set per path pattern). */
struct api_http_stats *api__http_stats_new(void);
/** Frees @st. Accepts NULL. */
void api__http_stats_free(struct api_http_stats *st);
/**
 * Counts one response: @route (NULL when no route matched), the request's @method (an enum
 * http_method, or -1 when the request line never arrived), the answered @status, and the
 * latency since @start_ns (uv_hrtime). Loop thread; nanoseconds.
 */
void api__http_stats_record(struct api_http_stats *st, const struct api_route *route,
                            int method, int status, uint64_t start_ns);
/** Appends the HTTP families (requests, latency, open connections @conns) to @out. */
void api__http_stats_write(const struct api_http_stats *st, int64_t conns, struct mlr_buf *out);

/** The server's HTTP counters and its open (served) connections. */
struct api_http_stats *api__server_http_stats(const struct api_server *srv);
int64_t api__server_conn_count(const struct api_server *srv);

/** The route table: its length, row @i, and the row index of @route. */
int api__route_count(void);
const struct api_route *api__route_at(int i);
int api__route_index(const struct api_route *route);

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
    char peer[48];                /* the client's IP address ("-" if unknown) */
    int loopback;                 /* the client is on a loopback address */
    struct api_tls_conn *tls;     /* TLS session, NULL on a plaintext listener */
    int tls_up;                   /* the TLS handshake has completed */
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
void api_h_stats(struct api_req *req);
void api_h_profile(struct api_req *req);
void api_h_metrics(struct api_req *req);

/** The register response {"task_id","status":"CREATED","model_id"}. */
void api_send_registered(struct api_req *req, const char *task_id, const char *model_id);

/** `_register?deploy=true`: starts a deploy of the just-registered model, then answers the
 * register request once that is committed too. */
void api_deploy_chain(struct api_req *req, const char *model_id, const char *register_task_id);

#endif /* MLR_API_INT_H */
