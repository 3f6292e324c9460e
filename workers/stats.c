/*
 * stats.c — what workers/ counts, and the three views of it: ML Commons' stats API (action
 * counts per node, algorithm and model; reference §14), its profile API (deployed models with
 * predict latency percentiles, running tasks) and the Prometheus families of /metrics.
 *
 * Counting. ML action counts are plain integers on the loop thread: node totals, plus one hash
 * entry per model (at most WORKERS_STATS_MODELS_MAX; later models only count in the totals, so
 * memory stays bounded however many models are registered). Predict and batch predict count
 * the request when it arrives and a failure when it is answered with one (a small wrapper around
 * the caller's callback); register, deploy and undeploy tasks count when their outcome commits.
 * Upstream calls are counted on their deployment (predict.c): outcome class, latency, retries,
 * and the window of recent predict latencies the profile reports. A redeploy starts a deployment
 * with fresh statistics, as ML Commons' model cache does.
 *
 * Metrics label upstream series by model id only for models deployed here, and at most
 * WORKERS_METRICS_MODELS_MAX of them; any further deployments are summed under model="other",
 * so a scrape has a bounded number of series. Series of an undeployed model disappear.
 *
 * Loop thread only. Costs: a hash lookup per counted action; O(deployments) per scrape.
 */
#include "workers_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

static const char *const action_names[WORKERS__ACTIONS] = {
#define XX(name, text) text,
    WORKERS_ACTION_MAP(XX)
#undef XX
};

/* ---------------------------------- counting ---------------------------------- */

void workers__upstream_stats_init(struct workers_upstream_stats *u)
{
    memset(u->calls, 0, sizeof(u->calls));
    u->retries = 0;
    mlr_histogram_init(&u->latency_us, mlr_metrics_latency_us, mlr_metrics_latency_us_count);
    mlr_samples_init(&u->predict_ms);
}

void workers__upstream_stats_cleanup(struct workers_upstream_stats *u)
{
    mlr_samples_cleanup(&u->predict_ms);
}

static unsigned hash(const char *id)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

/* The counts of @model_id, created on first use while there is room; NULL when there is none. */
static struct workers_model_counts *model_counts(struct workers_stats *st, const char *model_id)
{
    unsigned b = hash(model_id) & (WORKERS_BUCKETS - 1);
    for (struct workers_model_counts *m = st->models[b]; m; m = m->next) {
        if (strcmp(m->model_id, model_id) == 0)
            return m;
    }
    if (st->nmodels >= WORKERS_STATS_MODELS_MAX)
        return NULL;
    struct workers_model_counts *m = mlr_xcalloc(1, sizeof(*m));
    m->model_id = mlr_xstrdup(model_id);
    m->next = st->models[b];
    st->models[b] = m;
    st->nmodels++;
    return m;
}

/* Adds to @model_id's counts only. */
static void model_add(struct workers_stats *st, const char *model_id, enum workers_action a,
                      int requests, int failures)
{
    struct workers_model_counts *m = model_counts(st, model_id);
    if (m) {
        m->requests[a] += (uint64_t)requests;
        m->failures[a] += (uint64_t)failures;
    }
}

void workers_stats_add(struct workers *w, const char *model_id, enum workers_action a,
                       int requests, int failures)
{
    struct workers_stats *st = &w->stats;
    st->requests[a] += (uint64_t)requests;
    st->failures[a] += (uint64_t)failures;
    if (model_id)
        model_add(st, model_id, a, requests, failures);
}

void workers__stats_cleanup(struct workers_stats *st)
{
    for (int i = 0; i < WORKERS_BUCKETS; i++) {
        while (st->models[i]) {
            struct workers_model_counts *m = st->models[i];
            st->models[i] = m->next;
            free(m->model_id);
            free(m);
        }
    }
    st->nmodels = 0;
}

/*
 * A counted call: the caller's callback and what to count when it is answered. Per-model counts
 * are only opened for a model deployed here (when the call starts, or once an auto-deploy made
 * it so), so predicts on made-up ids cannot use up the WORKERS_STATS_MODELS_MAX entries.
 */
struct counted {
    struct workers *w;
    enum workers_action action;
    int per_model;                   /* the request was counted for the model too */
    workers_predict_cb cb;
    void *data;
    char model_id[STORE_ID_MAX + 1];
};

void *workers__counted_new(struct workers *w, const char *model_id, enum workers_action a,
                           workers_predict_cb cb, void *data)
{
    struct counted *c = mlr_xmalloc(sizeof(*c));
    c->w = w;
    c->action = a;
    c->per_model = workers_deployment_get(w, model_id) != NULL;
    c->cb = cb;
    c->data = data;
    snprintf(c->model_id, sizeof(c->model_id), "%s", model_id);
    workers_stats_add(w, c->per_model ? model_id : NULL, a, 1, 0);
    w->stats.predicts_inflight++;
    return c;
}

void workers__counted_cb(struct json_object *response, const struct workers_error *e,
                         void *data)
{
    struct counted *c = data;
    struct workers *w = c->w;
    w->stats.predicts_inflight--;
    if (c->per_model) {
        workers_stats_add(w, c->model_id, c->action, 0, e != NULL);
    } else {
        workers_stats_add(w, NULL, c->action, 0, e != NULL);
        if (workers_deployment_get(w, c->model_id)) /* auto-deployed: the model counts now */
            model_add(&w->stats, c->model_id, c->action, 1, e != NULL);
    }
    workers_predict_cb cb = c->cb;
    void *cb_data = c->data;
    free(c);
    cb(response, e, cb_data);
}

void workers__stats_window(struct workers *w, int64_t window)
{
    for (int i = 0; i < WORKERS_BUCKETS; i++) {
        for (struct deployment *d = w->buckets[i]; d; d = d->next)
            mlr_samples_resize(&d->upstream.predict_ms, (size_t)(window > 0 ? window : 0));
    }
}

/* ---------------------------------- stats API ---------------------------------- */

void workers_stats_node(struct workers *w, struct workers_node_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (int a = 0; a < WORKERS__ACTIONS; a++) {
        out->requests += w->stats.requests[a];
        out->failures += w->stats.failures[a];
    }
    /* Running tasks, except async predicts: they are counted as the predicts they run. */
    const struct queue_stats *q = w->queue ? queue_stats_get(w->queue) : NULL;
    for (int t = 0; q && t < QUEUE_TASK__TYPES; t++)
        out->executing += t == QUEUE_TASK_PREDICTION ? 0 : q->running[t];
    out->executing += w->stats.predicts_inflight;
    out->deployed = w->ndeployed;
}

/* {"<action>": {"ml_action_request_count", "ml_action_failure_count"}} for requested actions,
 * or NULL. */
static struct json_object *actions_json(const uint64_t *requests, const uint64_t *failures)
{
    struct json_object *o = NULL;
    for (int a = 0; a < WORKERS__ACTIONS; a++) {
        if (requests[a] == 0 && failures[a] == 0)
            continue;
        struct json_object *stat = json_object_new_object();
        json_object_object_add(stat, "ml_action_request_count",
                               json_object_new_int64((int64_t)requests[a]));
        json_object_object_add(stat, "ml_action_failure_count",
                               json_object_new_int64((int64_t)failures[a]));
        if (o == NULL)
            o = json_object_new_object();
        json_object_object_add(o, action_names[a], stat); /* consumes stat */
    }
    return o;
}

struct json_object *workers_stats_algorithms(struct workers *w)
{
    struct json_object *remote = actions_json(w->stats.requests, w->stats.failures);
    if (remote == NULL)
        return NULL;
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "remote", remote); /* consumes remote */
    return o;
}

struct json_object *workers_stats_models(struct workers *w)
{
    struct json_object *o = NULL;
    for (int i = 0; i < WORKERS_BUCKETS; i++) {
        for (struct workers_model_counts *m = w->stats.models[i]; m; m = m->next) {
            struct json_object *actions = actions_json(m->requests, m->failures);
            if (actions == NULL)
                continue;
            if (o == NULL)
                o = json_object_new_object();
            json_object_object_add(o, m->model_id, actions); /* consumes actions */
        }
    }
    return o;
}

/* ---------------------------------- profile API ---------------------------------- */

/* Whether @id is in the JSON array of strings @ids (NULL = everything is). */
static int listed(struct json_object *ids, const char *id)
{
    if (ids == NULL)
        return 1;
    for (size_t i = 0; i < json_object_array_length(ids); i++) {
        const char *v = json_object_get_string(json_object_array_get_idx(ids, i));
        if (v && strcmp(v, id) == 0)
            return 1;
    }
    return 0;
}

static struct json_object *node_list(const struct workers *w)
{
    struct json_object *a = json_object_new_array();
    json_object_array_add(a, json_object_new_string(w->node_id)); /* consumes the string */
    return a;
}

/* {"count","max","min","average","p50","p90","p99"} in ML Commons' order over the newest
 * @window values, or NULL. */
static struct json_object *latency_json(const struct mlr_samples *s, size_t window)
{
    struct mlr_sample_stats st;
    if (mlr_samples_stats(s, window, &st) != 0)
        return NULL;
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "count", json_object_new_int64((int64_t)st.count));
    json_object_object_add(o, "max", json_object_new_double(st.max));
    json_object_object_add(o, "min", json_object_new_double(st.min));
    json_object_object_add(o, "average", json_object_new_double(st.average));
    json_object_object_add(o, "p50", json_object_new_double(st.p50));
    json_object_object_add(o, "p90", json_object_new_double(st.p90));
    json_object_object_add(o, "p99", json_object_new_double(st.p99));
    return o;
}

static struct json_object *model_profile(struct workers *w, struct deployment *d, size_t window)
{
    /* ML Commons shows the predictor object's Java toString(); we keep its class name and put
     * a hash of the model id where the JVM puts an identity hash (never a pointer). */
    char predictor[96];
    snprintf(predictor, sizeof(predictor), "org.opensearch.ml.engine.algorithms.remote."
                                           "RemoteModel@%x", hash(d->model_id));
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "model_state", json_object_new_string("DEPLOYED"));
    json_object_object_add(o, "predictor", json_object_new_string(predictor));
    json_object_object_add(o, "target_worker_nodes", node_list(w)); /* consumes the list */
    json_object_object_add(o, "worker_nodes", node_list(w));        /* consumes the list */
    struct json_object *lat = latency_json(&d->upstream.predict_ms, window);
    if (lat)
        json_object_object_add(o, "predict_request_stats", lat); /* consumes lat */
    return o;
}

struct json_object *workers_profile_models(struct workers *w, struct json_object *ids)
{
    /* The current window, not the one each ring was last pushed with: setting it to 0 hides
     * the figures at once, as ML Commons clears its cache when the setting changes. */
    struct mlr_settings *s = workers_settings_get(w);
    int64_t window = mlr_settings_int(s, MLR_S_MONITORING_REQUEST_COUNT);
    mlr_settings_unref(s);
    struct json_object *o = json_object_new_object();
    for (int i = 0; i < WORKERS_BUCKETS; i++) {
        for (struct deployment *d = w->buckets[i]; d; d = d->next) {
            if (listed(ids, d->model_id))
                json_object_object_add(o, d->model_id, /* consumes the profile */
                                       model_profile(w, d, (size_t)(window > 0 ? window : 0)));
        }
    }
    return o;
}

struct task_visit {
    struct json_object *ids;  /* filter, or NULL */
    struct json_object *out;  /* task id -> document */
};

static void visit_task(const char *task_id, struct json_object *doc, void *data)
{
    struct task_visit *v = data;
    struct json_object *copy = NULL;
    if (!listed(v->ids, task_id) || json_object_deep_copy(doc, &copy, NULL) != 0)
        return;
    json_object_object_add(copy, "task_id", json_object_new_string(task_id));
    json_object_object_add(v->out, task_id, copy); /* consumes copy */
}

struct json_object *workers_profile_tasks(struct workers *w, struct json_object *ids)
{
    struct task_visit v = {ids, json_object_new_object()};
    if (w->queue)
        queue_running_foreach(w->queue, visit_task, &v);
    return v.out;
}

/* ---------------------------------- Prometheus ---------------------------------- */

/* The deployments to label one by one (at most WORKERS_METRICS_MODELS_MAX) and the sum of the
 * others, gathered once per scrape. */
struct upstream_view {
    struct deployment **labelled;
    int n;
    int others;                           /* deployments summed into other */
    struct workers_upstream_stats other;  /* their sum (predict_ms unused) */
};

static void view_init(struct workers *w, struct upstream_view *v)
{
    v->labelled = mlr_xcalloc((size_t)(w->ndeployed > 0 ? w->ndeployed : 1), sizeof(*v->labelled));
    v->n = v->others = 0;
    workers__upstream_stats_init(&v->other);
    for (int i = 0; i < WORKERS_BUCKETS; i++) {
        for (struct deployment *d = w->buckets[i]; d; d = d->next) {
            if (v->n < WORKERS_METRICS_MODELS_MAX && v->n < w->ndeployed) {
                v->labelled[v->n++] = d;
                continue;
            }
            for (int c = 0; c < WORKERS_HTTP__CLASSES; c++)
                v->other.calls[c] += d->upstream.calls[c];
            v->other.retries += d->upstream.retries;
            mlr_histogram_merge(&v->other.latency_us, &d->upstream.latency_us);
            v->others++;
        }
    }
}

static void view_cleanup(struct upstream_view *v)
{
    free(v->labelled);
    workers__upstream_stats_cleanup(&v->other);
}

/* The i-th series of the view: a labelled deployment, or "other" at i == n. */
static const struct workers_upstream_stats *view_at(const struct upstream_view *v, int i,
                                                    const char **model)
{
    if (i < v->n) {
        *model = v->labelled[i]->model_id;
        return &v->labelled[i]->upstream;
    }
    *model = "other";
    return &v->other;
}

static void write_upstream(struct upstream_view *v, struct mlr_buf *out)
{
    struct mlr_buf lab;
    mlr_buf_init(&lab, 0);
    int series = v->n + (v->others > 0);
    const char *model;
    mlr_metrics_family(out, "mlrelay_upstream_requests_total", "counter",
                       "Upstream (model provider) call attempts by model and outcome class.");
    for (int i = 0; i < series; i++) {
        const struct workers_upstream_stats *u = view_at(v, i, &model);
        for (int c = 0; c < WORKERS_HTTP__CLASSES; c++) {
            mlr_buf_reset(&lab);
            mlr_metrics_label(&lab, "model", model);
            mlr_metrics_label(&lab, "class", workers_http_class_name((enum workers_http_class)c));
            mlr_metrics_u64(out, "mlrelay_upstream_requests_total", lab.data, u->calls[c]);
        }
    }
    mlr_metrics_family(out, "mlrelay_upstream_request_duration_seconds", "histogram",
                       "Upstream call attempt latency by model, from start to answer.");
    for (int i = 0; i < series; i++) {
        const struct workers_upstream_stats *u = view_at(v, i, &model);
        mlr_buf_reset(&lab);
        mlr_metrics_label(&lab, "model", model);
        mlr_metrics_histogram(out, "mlrelay_upstream_request_duration_seconds", lab.data,
                              &u->latency_us, 1e6);
    }
    mlr_metrics_family(out, "mlrelay_upstream_retries_total", "counter",
                       "Upstream call attempts that were retries (429, 5xx, transport errors).");
    for (int i = 0; i < series; i++) {
        const struct workers_upstream_stats *u = view_at(v, i, &model);
        mlr_buf_reset(&lab);
        mlr_metrics_label(&lab, "model", model);
        mlr_metrics_u64(out, "mlrelay_upstream_retries_total", lab.data, u->retries);
    }
    mlr_buf_cleanup(&lab);
}

static void write_actions(struct workers *w, struct mlr_buf *out)
{
    struct mlr_buf lab;
    mlr_buf_init(&lab, 0);
    mlr_metrics_family(out, "mlrelay_ml_requests_total", "counter",
                       "ML Commons actions requested (the stats API's ml_action_request_count).");
    for (int a = 0; a < WORKERS__ACTIONS; a++) {
        mlr_buf_reset(&lab);
        mlr_metrics_label(&lab, "action", action_names[a]);
        mlr_metrics_u64(out, "mlrelay_ml_requests_total", lab.data, w->stats.requests[a]);
    }
    mlr_metrics_family(out, "mlrelay_ml_failures_total", "counter",
                       "ML Commons actions that failed (the stats API's ml_action_failure_count).");
    for (int a = 0; a < WORKERS__ACTIONS; a++) {
        mlr_buf_reset(&lab);
        mlr_metrics_label(&lab, "action", action_names[a]);
        mlr_metrics_u64(out, "mlrelay_ml_failures_total", lab.data, w->stats.failures[a]);
    }
    mlr_buf_cleanup(&lab);
}

static void write_tasks(const struct queue_stats *q, struct mlr_buf *out)
{
    struct mlr_buf lab;
    mlr_buf_init(&lab, 0);
    mlr_metrics_family(out, "mlrelay_tasks_claimed_total", "counter",
                       "Tasks claimed by this node's queue (CREATED to RUNNING), by type.");
    for (int t = 0; t < QUEUE_TASK__TYPES; t++) {
        mlr_buf_reset(&lab);
        mlr_metrics_label(&lab, "type", queue_task_type_name((enum queue_task_type)t));
        mlr_metrics_u64(out, "mlrelay_tasks_claimed_total", lab.data, q->claimed[t]);
    }
    mlr_metrics_family(out, "mlrelay_tasks_finished_total", "counter",
                       "Tasks this node's queue brought to a final state, by type and state.");
    for (int t = 0; t < QUEUE_TASK__TYPES; t++) {
        for (int st = 0; st < QUEUE_STATE__COUNT; st++) {
            if (!queue_task_state_is_final((enum queue_task_state)st))
                continue;
            mlr_buf_reset(&lab);
            mlr_metrics_label(&lab, "type", queue_task_type_name((enum queue_task_type)t));
            mlr_metrics_label(&lab, "state", queue_task_state_name((enum queue_task_state)st));
            mlr_metrics_u64(out, "mlrelay_tasks_finished_total", lab.data, q->finished[t][st]);
        }
    }
    mlr_metrics_family(out, "mlrelay_tasks_running", "gauge",
                       "Tasks claimed by this node whose outcome is not yet committed, by type.");
    for (int t = 0; t < QUEUE_TASK__TYPES; t++) {
        mlr_buf_reset(&lab);
        mlr_metrics_label(&lab, "type", queue_task_type_name((enum queue_task_type)t));
        mlr_metrics_u64(out, "mlrelay_tasks_running", lab.data,
                        (uint64_t)(q->running[t] > 0 ? q->running[t] : 0));
    }
    mlr_buf_cleanup(&lab);
}

static void write_queue(const struct queue_stats *q, struct mlr_buf *out)
{
    int64_t running = 0;
    for (int t = 0; t < QUEUE_TASK__TYPES; t++)
        running += q->running[t];
    mlr_metrics_family(out, "mlrelay_task_queue_wait_seconds", "histogram",
                       "Time tasks waited in CREATED before this node claimed them.");
    mlr_metrics_histogram(out, "mlrelay_task_queue_wait_seconds", NULL, &q->wait_us, 1e6);
    mlr_metrics_family(out, "mlrelay_worker_capacity", "gauge",
                       "Tasks this node's queue may run at once.");
    mlr_metrics_u64(out, "mlrelay_worker_capacity", NULL, (uint64_t)q->capacity);
    mlr_metrics_family(out, "mlrelay_worker_utilization", "gauge",
                       "Tasks running divided by the queue's capacity (0 to 1).");
    mlr_metrics_f64(out, "mlrelay_worker_utilization", NULL,
                    q->capacity > 0 ? (double)running / q->capacity : 0);
}

void workers_metrics_write(struct workers *w, struct mlr_buf *out)
{
    struct upstream_view v;
    view_init(w, &v);
    write_upstream(&v, out);
    view_cleanup(&v);
    mlr_metrics_family(out, "mlrelay_upstream_inflight", "gauge",
                       "Upstream calls in flight (all models).");
    mlr_metrics_u64(out, "mlrelay_upstream_inflight", NULL,
                    (uint64_t)workers_http_inflight(w->http));
    mlr_metrics_family(out, "mlrelay_deployed_models", "gauge", "Models deployed on this node.");
    mlr_metrics_u64(out, "mlrelay_deployed_models", NULL, (uint64_t)w->ndeployed);
    mlr_metrics_family(out, "mlrelay_predicts_inflight", "gauge",
                       "Predicts (synchronous, async and batch ingestion units) not yet answered.");
    mlr_metrics_u64(out, "mlrelay_predicts_inflight", NULL,
                    (uint64_t)(w->stats.predicts_inflight > 0 ? w->stats.predicts_inflight : 0));
    write_actions(w, out);
    if (w->queue) {
        write_tasks(queue_stats_get(w->queue), out);
        write_queue(queue_stats_get(w->queue), out);
    }
}
