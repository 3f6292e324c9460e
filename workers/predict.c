/*
 * predict.c — the predict engine: from a request body to the upstream calls and back to
 * ML Commons' response, on the loop thread without blocking.
 *
 * One predict becomes one or more upstream calls (text_docs split by the pre-process function).
 * Each call renders the connector's predict action (URL, headers with credentials, body) with the
 * merged parameters, re-checks the rendered URL against the trusted list, and goes out through
 * the libcurl multi client. client_config.max_connection caps the calls in flight per deployment;
 * extra calls wait in a FIFO rather than fail. Failures that may pass (429, 5xx, transport) are
 * retried with the connector's backoff policy, honouring Retry-After. When every call has
 * answered, the post-process function turns each body into tensors and the callback receives
 * {"inference_results": [...]}; the first failing call fails the whole predict, as in ML Commons.
 *
 * A predict holds a reference to its deployment, so an undeploy or a hot reload in the middle
 * lets it finish with the version it started with. Loop thread only.
 */
#include "workers_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <json-c/json.h>

#define IAE "illegal_argument_exception"

struct predict {
    struct workers *w;
    struct deployment *d;          /* reference held for the whole predict */
    struct json_object *body;      /* the request body (reference) */
    struct json_object *requests;  /* parameter sets, one per upstream call */
    struct json_object *results;   /* inference_results, filled by call index */
    struct mlr_settings *settings; /* snapshot for the whole predict */
    struct json_object *action;    /* the connector action to run (a reference), or NULL */
    const char *type;              /* static: its action type, "PREDICT", "BATCH_PREDICT", ... */
    long upstream_status;          /* HTTP status of the provider's failing answer, 0 if none */
    workers__action_cb acb;        /* set instead of cb for actions other than predict */
    int ncalls;
    int pending;                   /* calls not finished */
    int ndocs;                     /* docs sent (rerank post-processing) */
    int failed;
    uint64_t start_ns;             /* monotonic (uv_hrtime), for the profile's latencies */
    uint64_t answered_ns;          /* monotonic (uv_hrtime): the last upstream answer */
    struct workers_error error;    /* the first failure */
    workers_predict_cb cb;
    void *data;
};

struct predict_call {
    struct predict *p;
    int index;                     /* position in inference_results */
    int attempt;                   /* retries done */
    int64_t first_ms;              /* monotonic start, for retry_timeout_seconds */
    uint64_t attempt_ns;           /* monotonic (uv_hrtime) start of the current attempt */
    struct workers_http_req http;
    struct json_object *params;    /* merged parameters of this call */
    char *url;
    char *body;
    char host[256];
    uv_timer_t backoff;            /* retry delay */
    struct predict_call *next;     /* deployment wait queue */
    int started;                   /* holds a slot under max_connection */
    struct predict_call *bprev;    /* w->backoffs: calls waiting to retry */
    struct predict_call *bnext;
};

static struct json_object *get(struct json_object *o, const char *k)
{
    struct json_object *v = NULL;
    return o && json_object_object_get_ex(o, k, &v) ? v : NULL;
}

static const char *get_str(struct json_object *o, const char *k)
{
    struct json_object *v = get(o, k);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static int64_t cc_int(struct deployment *d, const char *k, int64_t def)
{
    struct json_object *cc = get(d->connector, "client_config"), *v = get(cc, k);
    return v ? json_object_get_int64(v) : def;
}

#define fail workers_error_set

struct json_object *workers__action_find(struct json_object *connector, const char *type)
{
    struct json_object *actions = get(connector, "actions");
    for (size_t i = 0; actions && i < json_object_array_length(actions); i++) {
        struct json_object *a = json_object_array_get_idx(actions, i);
        const char *t = get_str(a, "action_type");
        if (t && strcasecmp(t, type) == 0)
            return a;
    }
    return NULL;
}

static int render_headers(struct predict *p, struct predict_call *c, struct workers_error *e);

/* ---------------------------------- finishing ---------------------------------- */

static void predict_free(struct predict *p)
{
    workers_deployment_unref(p->d);
    json_object_put(p->body);
    json_object_put(p->requests);
    json_object_put(p->results);
    json_object_put(p->action);
    mlr_settings_unref(p->settings);
    free(p);
}

/* A successful predict's duration, from its start to its last upstream answer (post-processing
 * takes microseconds; reusing that clock read keeps the hot path at one read per attempt), goes
 * into its deployment's window for the profile API. */
static void record_latency(struct predict *p)
{
    int64_t window = mlr_settings_int(p->settings, MLR_S_MONITORING_REQUEST_COUNT);
    uint64_t end = p->answered_ns ? p->answered_ns : uv_hrtime();
    double ms = (double)(end - p->start_ns) / 1e6;
    mlr_samples_push(&p->d->upstream.predict_ms, ms, (size_t)(window > 0 ? window : 0));
}

static void predict_finish(struct predict *p)
{
    struct json_object *out = NULL;
    if (!p->failed && p->acb == NULL)
        record_latency(p);
    if (!p->failed) {
        out = json_object_new_object();
        json_object_object_add(out, "inference_results", json_object_get(p->results));
    }
    if (p->acb)
        p->acb(out, p->failed ? &p->error : NULL, p->upstream_status, p->data);
    else
        p->cb(out, p->failed ? &p->error : NULL, p->data);
    json_object_put(out);
    predict_free(p);
}

static void call_closed(uv_handle_t *h)
{
    struct predict_call *c = h->data;
    struct predict *p = c->p;
    workers_http_req_cleanup(&c->http);
    json_object_put(c->params);
    free(c->url);
    free(c->body);
    free(c);
    if (--p->pending == 0)
        predict_finish(p);
}

static void start_call(struct predict_call *c);

/* Ends a call: frees its slot under max_connection and starts the next waiting call. */
static void call_end(struct predict_call *c)
{
    struct deployment *d = c->p->d;
    struct predict_call *next = c->started ? d->waiting : NULL;
    if (c->started)
        d->inflight--;
    if (next) {
        d->waiting = next->next;
        if (d->waiting == NULL)
            d->waiting_tail = NULL;
        next->next = NULL;
        start_call(next);
    }
    uv_close((uv_handle_t *)&c->backoff, call_closed);
}

static void call_fail(struct predict_call *c, const struct workers_error *e)
{
    struct predict *p = c->p;
    if (!p->failed) {
        p->failed = 1;
        p->error = *e;
    }
    call_end(c);
}

/* ---------------------------------- responses ---------------------------------- */

static struct json_object *parse_body(const char *text, size_t len)
{
    struct json_tokener *tok = json_tokener_new_ex(64);
    struct json_object *o = json_tokener_parse_ex(tok, text, (int)len);
    int ok = o && json_tokener_get_error(tok) == json_tokener_success &&
             json_tokener_get_parse_end(tok) == len;
    json_tokener_free(tok);
    if (ok)
        return o;
    json_object_put(o);
    return json_object_new_string_len(text, (int)len);
}

static void call_succeeded(struct predict_call *c)
{
    struct predict *p = c->p;
    struct workers_error e;
    struct json_object *resp = parse_body(c->http.response.data ? c->http.response.data : "",
                                          c->http.response.len);
    const char *fn = get_str(p->action, "post_process_function");
    const char *filter = get_str(c->params, "response_filter");
    struct json_object *output = NULL;
    int rc = workers_postprocess(fn, filter, resp, p->ndocs, &output, &e);
    json_object_put(resp);
    if (rc != MLR_OK) {
        call_fail(c, &e);
        return;
    }
    struct json_object *r = json_object_new_object();
    json_object_object_add(r, "output", output); /* consumes output */
    json_object_object_add(r, "status_code", json_object_new_int((int)c->http.status));
    json_object_array_put_idx(p->results, (size_t)c->index, r); /* consumes r */
    call_end(c);
}

/* 429, 5xx, AWS throttling and transport failures may pass on a retry. */
static int retryable(const struct predict_call *c)
{
    if (c->http.too_big || c->http.private_refused)
        return 0;
    if (c->http.curl_code != 0)
        return 1;
    return c->http.status == 429 || c->http.status >= 500 ||
           strncmp(c->http.amzn_error, "ThrottlingException", 19) == 0;
}

/* The delay before retry number @attempt (1-based), per client_config (reference §4.3). */
static int64_t backoff_ms(struct predict_call *c)
{
    struct deployment *d = c->p->d;
    const char *policy = get_str(get(d->connector, "client_config"), "retry_backoff_policy");
    int64_t base = cc_int(d, "retry_backoff_millis", 200);
    int64_t cap = cc_int(d, "retry_timeout_seconds", 30) * 1000;
    double exp = (double)base * pow(2.0, c->attempt - 1);
    int64_t temp = exp > (double)cap ? cap : (int64_t)exp;
    int64_t delay = base;
    if (policy && strcmp(policy, "exponential_equal_jitter") == 0)
        delay = temp / 2 + (temp > 1 ? rand() % (temp / 2 + 1) : 0);
    else if (policy && strcmp(policy, "exponential_full_jitter") == 0)
        delay = temp > 0 ? rand() % (temp + 1) : 0;
    int64_t after = c->http.retry_after[0] ? atoll(c->http.retry_after) * 1000 : 0;
    return after > delay ? after : delay;
}

static void backoff_unlink(struct predict_call *c)
{
    struct workers *w = c->p->w;
    if (c->bprev)
        c->bprev->bnext = c->bnext;
    else if (w->backoffs == c)
        w->backoffs = c->bnext;
    if (c->bnext)
        c->bnext->bprev = c->bprev;
    c->bprev = c->bnext = NULL;
}

static void on_backoff(uv_timer_t *t)
{
    struct predict_call *c = t->data;
    struct workers_error e;
    backoff_unlink(c);
    workers_http_req_cleanup(&c->http);
    c->http.headers = NULL;
    if (render_headers(c->p, c, &e) != MLR_OK) {
        call_fail(c, &e);
        return;
    }
    c->attempt_ns = uv_hrtime();
    if (c->p->w->http == NULL || workers_http_start(c->p->w->http, &c->http) != MLR_OK) {
        fail(&e, 500, "exception", "Error communicating with remote model: cannot retry");
        call_fail(c, &e);
    }
}

/* Whether to try again, and when; starts the timer when so. */
static int maybe_retry(struct predict_call *c)
{
    struct deployment *d = c->p->d;
    int64_t max = cc_int(d, "max_retry_times", 0);
    int64_t budget = cc_int(d, "retry_timeout_seconds", 30) * 1000;
    if (!retryable(c) || (max >= 0 && c->attempt >= max) ||
        mlr_mono_ms() - c->first_ms >= budget)
        return 0;
    c->attempt++;
    int64_t delay = backoff_ms(c);
    if (mlr_mono_ms() - c->first_ms + delay > budget)
        return 0;
    uv_timer_start(&c->backoff, on_backoff, (uint64_t)delay, 0);
    d->upstream.retries++;
    c->bnext = c->p->w->backoffs; /* listed so that a shutdown need not wait for the timer */
    if (c->bnext)
        c->bnext->bprev = c;
    c->bprev = NULL;
    c->p->w->backoffs = c;
    return 1;
}

static void map_failure(struct predict_call *c, struct workers_error *e)
{
    const struct workers_http_req *h = &c->http;
    size_t len = h->response.len;
    const char *body = h->response.data ? h->response.data : "";
    if (h->private_refused)
        fail(e, 400, IAE, "Remote inference host name has private ip address: %s", c->host);
    else if (h->too_big)
        fail(e, 500, "m_l_exception", "Error communicating with remote model: response body is "
                                      "larger than plugins.ml_commons.max_json_size");
    else if (h->curl_code != 0)
        fail(e, 500, "m_l_exception", "Error communicating with remote model: %s",
             workers_http_error(h));
    else if (strncmp(h->amzn_error, "ThrottlingException", 19) == 0)
        fail(e, (int)h->status, "status_exception",
             "Error from remote service: The request was denied due to remote server throttling. "
             "To change the retry policy and behavior, please update the connector "
             "client_config.");
    else if (len == 0)
        fail(e, (int)h->status, "status_exception",
             "Remote service returned error status %ld with empty body", h->status);
    else
        fail(e, (int)h->status, "status_exception", "Error from remote service: %.*s",
             (int)(len < 900 ? len : 900), body);
}

/* Every attempt counts for its deployment: outcome class and latency. */
static void count_attempt(struct predict_call *c, int ok)
{
    struct workers_upstream_stats *u = &c->p->d->upstream;
    enum workers_http_class cls = workers_http_class_of(&c->http);
    if (!ok && cls == WORKERS_HTTP_OK)
        cls = WORKERS_HTTP_STATUS; /* AWS throttling rides on a 2xx */
    u->calls[cls]++;
    c->p->answered_ns = uv_hrtime();
    mlr_histogram_observe(&u->latency_us, (c->p->answered_ns - c->attempt_ns) / 1000);
}

static void on_http_done(struct workers_http_req *r, void *data)
{
    struct predict_call *c = data;
    UNUSED(r);
    struct workers_error e;
    int ok = c->http.curl_code == 0 && c->http.status >= 200 && c->http.status < 300 &&
             strncmp(c->http.amzn_error, "ThrottlingException", 19) != 0;
    count_attempt(c, ok);
    if (ok && c->http.response.len == 0) {
        fail(&e, 502, "status_exception", "Remote service returned empty response body");
        call_fail(c, &e);
        return;
    }
    if (ok) {
        call_succeeded(c);
        return;
    }
    if (maybe_retry(c))
        return;
    if (!c->p->failed && c->http.curl_code == 0 && !c->http.private_refused)
        c->p->upstream_status = c->http.status; /* the provider did answer: batch jobs log it */
    map_failure(c, &e);
    call_fail(c, &e);
}

/* ---------------------------------- building a call ---------------------------------- */

/* Renders the action's headers (credentials allowed) into c->http.headers. */
static int render_headers(struct predict *p, struct predict_call *c, struct workers_error *e)
{
    struct json_object *headers = get(p->action, "headers");
    int has_type = 0;
    struct curl_slist *list = NULL;
    if (headers && !json_object_is_type(headers, json_type_object))
        headers = NULL;
    struct json_object_iterator it, end;
    if (headers) {
        it = json_object_iter_begin(headers);
        end = json_object_iter_end(headers);
    }
    for (; headers && !json_object_iter_equal(&it, &end); json_object_iter_next(&it)) {
        const char *name = json_object_iter_peek_name(&it);
        struct json_object *val = json_object_iter_peek_value(&it);
        char *v = NULL;
        int rc = workers_template_render(json_object_get_string(val), c->params,
                                         p->d->credential, &v, e);
        if (rc == MLR_OK)
            rc = workers_header_check(name, v, e);
        if (rc != MLR_OK) {
            free(v);
            curl_slist_free_all(list);
            return rc;
        }
        char *line = mlr_xasprintf("%s: %s", name, v);
        list = workers_http_header_append(list, line);
        free(line);
        free(v);
        has_type |= strcasecmp(name, "Content-Type") == 0;
    }
    if (!has_type)
        list = workers_http_header_append(list, "Content-Type: application/json");
    list = workers_http_header_append(list, "Expect:"); /* no 100-continue round trip */
    c->http.headers = list;
    return MLR_OK;
}

/* Extracts the host of @url into @out (for messages). */
static void url_host(const char *url, char *out, size_t len)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    size_t n = strcspn(p, "/:?#");
    snprintf(out, len, "%.*s", (int)(n < len ? n : len - 1), p);
}

/* SigV4 signing by libcurl: region and service from the parameters (or credential). */
static void setup_sigv4(struct predict *p, struct predict_call *c)
{
    struct deployment *d = p->d;
    if (strcmp(get_str(d->connector, "protocol") ? get_str(d->connector, "protocol") : "",
               "aws_sigv4") != 0)
        return;
    const char *region = get_str(c->params, "region") ? get_str(c->params, "region")
                                                      : get_str(d->credential, "region");
    const char *service = get_str(c->params, "service_name")
                              ? get_str(c->params, "service_name")
                              : get_str(d->credential, "service_name");
    snprintf(c->http.aws_sigv4, sizeof(c->http.aws_sigv4), "aws:amz:%s:%s", region ? region : "",
             service ? service : "");
    c->http.aws_key = get_str(d->credential, "access_key");
    c->http.aws_secret = get_str(d->credential, "secret_key");
    const char *token = get_str(d->credential, "session_token");
    if (token) {
        char *line = mlr_xasprintf("X-Amz-Security-Token: %s", token);
        c->http.headers = workers_http_header_append(c->http.headers, line);
        free(line);
    }
}

/* Renders URL and body and checks them (reference §5.3, spec §6). */
static int render_call(struct predict *p, struct predict_call *c, struct workers_error *e)
{
    struct json_object *action = p->action;
    if (action == NULL && strcmp(p->type, "PREDICT") == 0)
        return fail(e, 400, IAE, "no predict action configured for this connector");
    if (action == NULL) /* ML Commons' RemoteConnectorExecutor wording */
        return fail(e, 400, IAE, "no %s action found", p->type);
    const char *tmpl = get_str(action, "request_body");
    const char *method = get_str(action, "method");
    int rc = workers_template_render(get_str(action, "url"), c->params, NULL, &c->url, e);
    if (rc == MLR_OK)
        rc = workers_url_trusted(p->settings, c->url, e);
    if (rc == MLR_OK && tmpl) {
        rc = workers_template_render(tmpl, c->params, NULL, &c->body, e);
        if (rc == MLR_OK)
            rc = workers_body_check(c->body, c->params, e);
    } else if (rc == MLR_OK && get_str(c->params, "http_body")) {
        c->body = mlr_xstrdup(get_str(c->params, "http_body"));
    }
    /* A synthesised cancel (POST .../cancel) has no body by design; the providers take that. */
    if (rc == MLR_OK && method && strcasecmp(method, "POST") == 0 && (!c->body || !*c->body) &&
        !json_object_get_boolean(get(action, WORKERS__SYNTHESISED)))
        rc = fail(e, 400, IAE, "Content length is 0. Aborting request to remote model");
    if (rc == MLR_OK)
        rc = render_headers(p, c, e);
    if (rc != MLR_OK)
        return rc;
    url_host(c->url, c->host, sizeof(c->host));
    c->http.method = method ? method : "POST";
    c->http.url = c->url;
    c->http.body = c->body;
    c->http.body_len = c->body ? strlen(c->body) : 0;
    setup_sigv4(p, c);
    return MLR_OK;
}

static void call_timeouts(struct predict *p, struct predict_call *c)
{
    struct deployment *d = p->d;
    int64_t max_json = mlr_settings_int(p->settings, MLR_S_MAX_JSON_SIZE);
    /* read_timeout is how long the upstream may stay silent (like a socket read timeout); the
     * whole transfer is also bounded, so a slow drip cannot hold a call forever. */
    c->http.connect_timeout_ms = (long)(cc_int(d, "connection_timeout", 30) * 1000);
    c->http.read_timeout_s = (long)cc_int(d, "read_timeout", 30);
    c->http.timeout_ms = c->http.connect_timeout_ms + c->http.read_timeout_s * 2000;
    c->http.skip_verify = json_object_get_boolean(get(get(d->connector, "client_config"),
                                                      "skip_ssl_verification"));
    c->http.allow_private = mlr_settings_bool(p->settings, MLR_S_PRIVATE_IP_ENABLED);
    c->http.max_body = max_json > 0 ? (size_t)max_json : 0;
    c->http.done = on_http_done;
    c->http.data = c;
}

static void start_call(struct predict_call *c)
{
    struct deployment *d = c->p->d;
    struct workers_error e;
    d->inflight++;
    c->started = 1;
    c->first_ms = mlr_mono_ms();
    c->attempt_ns = uv_hrtime();
    if (c->p->w->http == NULL || workers_http_start(c->p->w->http, &c->http) != MLR_OK) {
        fail(&e, 500, "m_l_exception", "Error communicating with remote model: cannot start");
        call_fail(c, &e);
    }
}

/* Queues or starts @c under the deployment's max_connection cap. */
static void admit_call(struct predict_call *c)
{
    struct deployment *d = c->p->d;
    if (d->inflight < cc_int(d, "max_connection", 30)) {
        start_call(c);
        return;
    }
    if (d->waiting_tail)
        d->waiting_tail->next = c;
    else
        d->waiting = c;
    d->waiting_tail = c;
}

/* ---------------------------------- entry ---------------------------------- */

/* The model-level rate limiter: a token bucket refilled at limit per unit (reference §7.3). */
static int rate_limited(struct deployment *d)
{
    struct json_object *rl = get(d->model, "rate_limiter");
    const char *limit = get_str(rl, "limit"), *unit = get_str(rl, "unit");
    if (limit == NULL || unit == NULL)
        return 0;
    static const struct {
        const char *name;
        double ms;
    } units[] = {{"NANOSECONDS", 1e-6}, {"MICROSECONDS", 1e-3}, {"MILLISECONDS", 1},
                 {"SECONDS", 1e3},      {"MINUTES", 6e4},       {"HOURS", 3.6e6},
                 {"DAYS", 8.64e7}};
    double per_ms = 0, cap = atof(limit);
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(units[i].name, unit) == 0)
            per_ms = cap / units[i].ms;
    }
    cap = cap < 1 ? 1 : cap;
    int64_t now = mlr_mono_ms();
    if (d->refill_ms == 0)
        d->tokens = cap;
    d->tokens = fmin(cap, d->tokens + (double)(now - d->refill_ms) * per_ms * (d->refill_ms != 0));
    d->refill_ms = now;
    if (d->tokens < 1)
        return 1;
    d->tokens -= 1;
    return 0;
}

/* Builds the calls' parameter sets: text_docs through the pre-process function, or the request
 * "parameters" as one call. */
static int plan_calls(struct predict *p, struct workers_error *e)
{
    struct json_object *docs = get(p->body, "text_docs");
    struct json_object *req_params = get(p->body, "parameters");
    struct json_object *conn_params = get(p->d->connector, "parameters");
    struct json_object *pre = NULL;
    if (docs) {
        struct json_object *action = p->action;
        int step = 0;
        struct json_object *sv = get(req_params, "input_docs_processed_step_size");
        const char *s = sv ? json_object_get_string(sv)
                           : get_str(conn_params, "input_docs_processed_step_size");
        if (workers_step_parse(s, &step, e) != MLR_OK)
            return MLR_EINVAL;
        if (workers_preprocess_step(get_str(action, "pre_process_function"), docs,
                                    get_str(p->body, "query_text"), step, &pre, e) != MLR_OK)
            return MLR_EINVAL;
        p->ndocs = (int)json_object_array_length(docs);
    }
    p->requests = json_object_new_array();
    size_t n = pre ? json_object_array_length(pre) : 1;
    for (size_t i = 0; i < n; i++) {
        struct json_object *merged = NULL;
        if (workers_params_merge(conn_params, req_params,
                                 pre ? json_object_array_get_idx(pre, i) : NULL, &merged,
                                 e) != MLR_OK) {
            json_object_put(pre);
            return MLR_EINVAL;
        }
        json_object_array_add(p->requests, merged); /* consumes merged */
    }
    json_object_put(pre);
    p->ncalls = (int)n;
    return MLR_OK;
}

/* Creates, renders and admits every call; a render error fails the predict before any call. */
static void launch(struct predict *p)
{
    struct workers_error e;
    struct predict_call **calls = mlr_xcalloc((size_t)p->ncalls, sizeof(*calls));
    int rc = MLR_OK;
    for (int i = 0; i < p->ncalls && rc == MLR_OK; i++) {
        struct predict_call *c = calls[i] = mlr_xcalloc(1, sizeof(*c));
        c->p = p;
        c->index = i;
        c->params = json_object_get(json_object_array_get_idx(p->requests, (size_t)i));
        uv_timer_init(p->w->loop, &c->backoff);
        c->backoff.data = c;
        call_timeouts(p, c);
        rc = render_call(p, c, &e);
    }
    p->pending = p->ncalls;
    for (int i = 0; i < p->ncalls; i++) {
        if (rc == MLR_OK) {
            admit_call(calls[i]);
        } else if (calls[i]) {
            call_fail(calls[i], &e); /* never started: holds no slot */
        } else {
            p->pending--; /* never created */
        }
    }
    free(calls);
    if (p->pending == 0)
        predict_finish(p);
}

static struct predict *predict_new(struct workers *w, struct deployment *d,
                                   struct json_object *body, void *data)
{
    struct predict *p = mlr_xcalloc(1, sizeof(*p));
    p->w = w;
    p->d = workers_deployment_ref(d);
    p->body = json_object_get(body);
    p->results = json_object_new_array();
    p->settings = workers_settings_get(w);
    p->type = "PREDICT";
    p->data = data;
    p->start_ns = uv_hrtime();
    return p;
}

static void predict_start(struct predict *p);

void workers__predict_run(struct workers *w, struct deployment *d, struct json_object *body,
                          workers_predict_cb cb, void *data)
{
    struct predict *p = predict_new(w, d, body, data);
    p->action = json_object_get(workers__action_find(d->connector, "PREDICT"));
    p->cb = cb;
    workers__ttl_touch(w, d);
    predict_start(p);
}

void workers__action_run(struct workers *w, struct deployment *d, const char *type,
                         struct json_object *action, struct json_object *body,
                         workers__action_cb cb, void *data)
{
    struct predict *p = predict_new(w, d, body, data);
    p->type = type;
    p->action = json_object_get(action ? action : workers__action_find(d->connector, type));
    p->acb = cb;
    predict_start(p);
}

/* The refusals every action shares (reference §6.8 step 2 and 5), then the calls. */
static void predict_start(struct predict *p)
{
    struct deployment *d = p->d;
    struct json_object *enabled = get(d->model, "is_enabled");
    /* Job status and cancel calls are bookkeeping of a job already accepted: ML Commons runs
     * them without the model's flag or rate limiter, and so do we. */
    int bookkeeping = strcmp(p->type, "PREDICT") != 0 && strcmp(p->type, "BATCH_PREDICT") != 0;
    if (bookkeeping)
        enabled = NULL;
    if (enabled && !json_object_get_boolean(enabled))
        p->failed = fail(&p->error, 403, "status_exception", "Model is disabled.") != MLR_OK;
    else if (!bookkeeping && rate_limited(d))
        p->failed = fail(&p->error, 429, "status_exception",
                         "Request is throttled at model level.") != MLR_OK;
    else if (plan_calls(p, &p->error) != MLR_OK)
        p->failed = 1;
    if (p->failed) {
        predict_finish(p);
        return;
    }
    launch(p);
}

/* ---------------------------------- auto-deploy (reference §11) ---------------------------------- */

/*
 * A predict on a model that is not deployed here deploys it first (when the cluster setting and
 * the model allow it) and then runs; the first call succeeds with extra latency. Predicts that
 * arrive while that deploy runs wait for the same deploy instead of starting their own.
 */
struct pending_predict {
    struct json_object *body;
    const char *type;              /* static: the action to run, "PREDICT" for a predict */
    workers_predict_cb cb;         /* predict */
    workers__action_cb acb;        /* any other action */
    void *data;
    struct pending_predict *next;
};

struct autodeploy {
    struct workers *w;
    char model_id[STORE_ID_MAX + 1];
    char task_id[MLR_ID_LEN + 1];
    struct pending_predict *waiters;
    struct autodeploy *next;       /* w->autodeploys */
};

/* Answers every waiter of @a (running them if the model is now deployed) and frees @a. */
static void autodeploy_done(struct autodeploy *a, const struct workers_error *e)
{
    struct workers *w = a->w;
    for (struct autodeploy **pp = &w->autodeploys; *pp; pp = &(*pp)->next) {
        if (*pp == a) {
            *pp = a->next;
            break;
        }
    }
    struct deployment *d = e ? NULL : workers_deployment_get(w, a->model_id);
    struct workers_error failed;
    fail(&failed, 500, "m_l_exception", "Failed to deploy model %s", a->model_id);
    while (a->waiters) {
        struct pending_predict *pp = a->waiters;
        a->waiters = pp->next;
        if (d && pp->acb)
            workers__action_run(w, d, pp->type, NULL, pp->body, pp->acb, pp->data);
        else if (d)
            workers__predict_run(w, d, pp->body, pp->cb, pp->data);
        else if (pp->acb)
            pp->acb(NULL, e ? e : &failed, 0, pp->data);
        else
            pp->cb(NULL, e ? e : &failed, pp->data);
        json_object_put(pp->body);
        free(pp);
    }
    free(a);
}

static void on_adopted(void *data)
{
    autodeploy_done(data, NULL); /* fails the calls if the build failed */
}

static void on_autodeployed(const char *task_id, const char *state, void *data)
{
    struct autodeploy *a = data;
    UNUSED(task_id);
    struct workers_error e;
    if (state && strcmp(state, "COMPLETED") == 0) {
        /* With several nodes the deploy may have run on another node, and this node's copy
         * comes with its next sync: build it here now rather than fail the waiting calls. */
        if (workers_deployment_get(a->w, a->model_id) == NULL && a->w->cluster.on) {
            workers__cluster_adopt(a->w, a->model_id, on_adopted, a);
            return;
        }
        autodeploy_done(a, NULL);
        return;
    }
    const char *kv[] = {"task_id", a->task_id, "model_id", a->model_id, "state",
                        state ? state : "no outcome (timed out or stopping)"};
    mlr_log_kv(MLR_LOG_WARN, "workers", "auto-deploy before a predict failed", kv, 3);
    fail(&e, 500, "m_l_exception", "Failed to deploy model %s: %s", a->model_id,
         state ? "the deploy task failed (see the task's error)" : "timed out");
    autodeploy_done(a, &e);
}

static void on_autodeploy_started(const struct store_write_result *r, void *data)
{
    struct autodeploy *a = data;
    struct workers_error e;
    if (r->status != MLR_OK) {
        fail(&e, r->status == MLR_ENOTFOUND ? 404 : 500, "status_exception",
             r->status == MLR_ENOTFOUND ? "Failed to find model" : "cannot start the deploy");
        autodeploy_done(a, &e);
        return;
    }
    workers_kick(a->w);
    workers_wait(a->w, a->task_id, 10000, on_autodeployed, a);
}

/* Refusals of reference §11 and §6.8, from the stored model. Returns MLR_OK to deploy. */
static int autodeploy_allowed(struct workers *w, struct json_object *model, const char *id,
                              struct workers_error *e)
{
    struct mlr_settings *s = workers_settings_get(w);
    int cluster = mlr_settings_bool(s, MLR_S_AUTO_DEPLOY);
    int remote = mlr_settings_bool(s, MLR_S_REMOTE_INFERENCE_ENABLED);
    mlr_settings_unref(s);
    struct json_object *enabled = get(model, "is_enabled");
    struct json_object *per_model = get(get(model, "deploy_setting"), "is_auto_deploy_enabled");
    if (!remote)
        return fail(e, 400, "status_exception",
                    "Remote Inference is currently disabled. To enable it, update the setting "
                    "\"plugins.ml_commons.remote_inference_enabled\" to true.");
    if (enabled && !json_object_get_boolean(enabled))
        return fail(e, 403, "status_exception", "Model is disabled.");
    if (!cluster)
        return fail(e, 400, IAE, "Model not ready yet. Please deploy the model first.");
    if (per_model && !json_object_get_boolean(per_model))
        return fail(e, 400, IAE,
                    "Auto deployment disabled for this model, please deploy model first Model "
                    "ID: %s",
                    id);
    return MLR_OK;
}

static void on_model_read(int status, struct store_doc *doc, void *data)
{
    struct autodeploy *a = data;
    struct workers_error e;
    if (status != MLR_OK) {
        fail(&e, status == MLR_ENOTFOUND ? 404 : 500, "status_exception",
             status == MLR_ENOTFOUND ? "Failed to find model" : "cannot read the model");
        autodeploy_done(a, &e);
        return;
    }
    if (autodeploy_allowed(a->w, doc->doc, a->model_id, &e) != MLR_OK) {
        autodeploy_done(a, &e);
        return;
    }
    struct json_object *task = queue_task_doc_new(QUEUE_TASK_DEPLOY_MODEL, a->model_id,
                                                  QUEUE_STATE_CREATED, a->w->node_id, 1,
                                                  mlr_now_ms());
    int rc = mlr_id_new(a->task_id);
    if (rc == MLR_OK)
        rc = store_model_deploy(a->w->store, a->model_id, a->task_id, task,
                                on_autodeploy_started, a);
    json_object_put(task);
    if (rc != MLR_OK) {
        fail(&e, 500, "exception", "cannot start the deploy: %s", mlr_strerror(rc));
        autodeploy_done(a, &e);
    }
}

/* Runs @pp now when the model is deployed here, else after the deploy it starts or joins. */
static void predict_or_deploy(struct workers *w, const char *model_id,
                              struct pending_predict *pp)
{
    struct deployment *d = workers_deployment_get(w, model_id);
    if (d) {
        if (pp->acb)
            workers__action_run(w, d, pp->type, NULL, pp->body, pp->acb, pp->data);
        else
            workers__predict_run(w, d, pp->body, pp->cb, pp->data);
        json_object_put(pp->body);
        free(pp);
        return;
    }
    struct autodeploy *a = w->autodeploys;
    while (a && strcmp(a->model_id, model_id) != 0)
        a = a->next;
    if (a) { /* a deploy of this model is under way: wait for it too */
        pp->next = a->waiters;
        a->waiters = pp;
        return;
    }
    a = mlr_xcalloc(1, sizeof(*a));
    a->w = w;
    snprintf(a->model_id, sizeof(a->model_id), "%s", model_id);
    a->waiters = pp;
    a->next = w->autodeploys;
    w->autodeploys = a;
    if (store_doc_get(w->store, STORE_MODEL, model_id, 0, on_model_read, a) != MLR_OK) {
        struct workers_error e;
        fail(&e, 500, "exception", "cannot read the model");
        autodeploy_done(a, &e);
    }
}

void workers_predict(struct workers *w, const char *model_id, struct json_object *body,
                     workers_predict_cb cb, void *data)
{
    struct pending_predict *pp = mlr_xcalloc(1, sizeof(*pp));
    pp->body = json_object_get(body);
    pp->type = "PREDICT";
    pp->cb = workers__counted_cb;
    pp->data = workers__counted_new(w, model_id, WORKERS_ACTION_PREDICT, cb, data);
    predict_or_deploy(w, model_id, pp);
}

void workers__action(struct workers *w, const char *model_id, const char *type,
                     struct json_object *body, workers__action_cb cb, void *data)
{
    struct pending_predict *pp = mlr_xcalloc(1, sizeof(*pp));
    pp->body = json_object_get(body);
    pp->type = type;
    pp->acb = cb;
    pp->data = data;
    predict_or_deploy(w, model_id, pp);
}

/* ---------------------------------- async predict (spec §7) ---------------------------------- */

/*
 * `_predict?async=true` stores a PREDICTION task whose input is the request body. The queue hands
 * it to this hook on the loop thread (a predict waits on the network, not on a CPU), and the
 * finished task document carries "response": exactly the body a synchronous predict would have
 * returned, or on failure "error" plus "response": {"status": <the status it would have had>}.
 */
static void on_async_predicted(struct json_object *response, const struct workers_error *e,
                               void *data)
{
    struct queue_job *job = data;
    struct json_object *fields = json_object_new_object();
    if (e) {
        struct json_object *r = json_object_new_object();
        json_object_object_add(r, "status", json_object_new_int(e->status));
        json_object_object_add(fields, "response", r); /* consumes r */
        job->state = QUEUE_STATE_FAILED;
        job->error = mlr_xstrdup(e->reason);
    } else {
        json_object_object_add(fields, "response", json_object_get(response));
    }
    job->task_fields = fields;
    queue_job_done(job);
}

int workers__runner_start(struct queue_job *job, void *data)
{
    struct workers *w = data;
    if (job->type == QUEUE_TASK_BATCH_INGEST)
        return workers__batch_start(w, job);
    if (job->type != QUEUE_TASK_PREDICTION)
        return 0;
    struct json_object *body = job->input ? json_tokener_parse(job->input) : NULL;
    if (body == NULL || !json_object_is_type(body, json_type_object)) {
        struct workers_error e;
        fail(&e, 400, IAE, "the task's input is missing or unreadable");
        json_object_put(body);
        on_async_predicted(NULL, &e, job);
        return 1;
    }
    workers_predict(w, job->model_id, body, on_async_predicted, job);
    json_object_put(body);
    return 1;
}

void workers__predict_abort_backoffs(struct workers *w)
{
    struct workers_error e;
    fail(&e, 500, "m_l_exception",
         "Error communicating with remote model: the server is shutting down");
    while (w->backoffs) {
        struct predict_call *c = w->backoffs;
        uv_timer_stop(&c->backoff);
        backoff_unlink(c);
        call_fail(c, &e);
    }
}
