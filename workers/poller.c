/*
 * poller.c — the timer that follows BATCH_PREDICTION jobs at their providers.
 *
 * One round: read the open BATCH_PREDICTION tasks (one indexed read on the pool), call each one's
 * batch_predict_status action with at most POLL_CONCURRENCY calls in flight on the loop's libcurl
 * multi client, and write each outcome through the store writer. The next round is armed only
 * when this one has finished, mlrelay.batch_predict.poll_interval later (read at that moment, so
 * a settings change applies from the next round). Nothing is kept in memory between rounds: the
 * store is the list, so polling resumes by itself after a restart.
 *
 * Outcome of one call (ML Commons' GetTaskTransportAction semantics): success merges the answer
 * into remote_job, resets remote_job.num_of_retries, and maps the first present
 * remote_job.status_field through the status regexes; a failure increments num_of_retries and,
 * past MAX_RETRIES in a row, makes the task UNREACHABLE with the failure as its error.
 *
 * Loop thread only. Shutdown: workers__batch_stop() closes the timer and makes calls still in
 * flight drop their outcome instead of writing it; the struct lives until workers_free().
 */
#include "workers_int.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#define POLL_BATCH 256      /* tasks read per round; more wait for the next round */
#define POLL_CONCURRENCY 8  /* status calls in flight at once */
#define POLL_MIN_MS 100     /* shortest interval between rounds */
#define MAX_RETRIES 10      /* failed status calls in a row before UNREACHABLE (ML Commons) */

struct poll_job {
    struct batch_poller *bp;
    char id[STORE_ID_MAX + 1];
    char model_id[STORE_ID_MAX + 1];
    struct json_object *doc;        /* the task document as read */
    char *input;                    /* the request parameters (JSON text), or NULL */
    struct poll_job *next;          /* the round's queue */
};

struct batch_poller {
    struct workers *w;
    uv_timer_t timer;
    int closing;                    /* workers__batch_stop() ran */
    int timer_closed;               /* the timer's close callback ran */
    int round;                      /* a round is in progress (list read or calls) */
    int64_t last_round_ms;          /* monotonic start of the last round */
    int inflight;                   /* status calls of this round in progress */
    struct poll_job *queue;         /* tasks of this round not started yet */
};

/* What one outcome writes, built on the loop thread and handed to the writer whole. */
struct poll_write {
    struct json_object *remote_job; /* the new remote_job (owned; touched by the writer only) */
    const char *state;              /* static new state, or NULL to keep it */
    char *error;                    /* task "error", or NULL */
};

static struct json_object *get(struct json_object *o, const char *k)
{
    struct json_object *v = NULL;
    return o && json_object_object_get_ex(o, k, &v) ? v : NULL;
}

/* The first element of @a when it is a non-empty array, else NULL (json-c asserts the type). */
static struct json_object *first(struct json_object *a)
{
    return a && json_object_is_type(a, json_type_array) ? json_object_array_get_idx(a, 0) : NULL;
}

static void arm(struct batch_poller *bp);
static void pump(struct batch_poller *bp);

const char *workers_batch_state(struct mlr_settings *s, struct json_object *remote_job)
{
    struct json_object *fields = mlr_settings_strings(s, MLR_S_REMOTE_JOB_STATUS_FIELD);
    struct json_object *val = NULL;
    for (size_t i = 0; fields && val == NULL && i < json_object_array_length(fields); i++)
        val = get(remote_job, json_object_get_string(json_object_array_get_idx(fields, i)));
    if (val == NULL)
        return NULL;
    /* String.valueOf(): a non-string status is matched as its JSON text. */
    const char *text = json_object_is_type(val, json_type_string)
                           ? json_object_get_string(val)
                           : json_object_to_json_string_ext(val, JSON_C_TO_STRING_PLAIN);
    static const struct {
        enum mlr_setting_id id;
        const char *state;
    } order[] = {{MLR_S_REMOTE_JOB_CANCELLING, "CANCELLING"},
                 {MLR_S_REMOTE_JOB_CANCELLED, "CANCELLED"},
                 {MLR_S_REMOTE_JOB_COMPLETED, "COMPLETED"},
                 {MLR_S_REMOTE_JOB_EXPIRED, "EXPIRED"},
                 {MLR_S_REMOTE_JOB_FAILED, "FAILED"}};
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        if (mlr_settings_match(s, order[i].id, text, strlen(text)))
            return order[i].state;
    }
    return NULL;
}

/* ---------------------------------- writing an outcome ---------------------------------- */

/* Writer thread: applies @arg to the task unless it became final meanwhile (a delete is
 * MLR_ENOTFOUND before this runs). */
static int poll_patch(struct json_object *doc, char **credential, void *arg, char *err,
                      size_t errlen)
{
    struct poll_write *pw = arg;
    UNUSED(credential);
    enum queue_task_state st;
    struct json_object *state = get(doc, "state");
    if (state == NULL || queue_task_state_parse(json_object_get_string(state), &st) != MLR_OK ||
        queue_task_state_is_final(st)) {
        snprintf(err, errlen, "the task is final");
        return MLR_ECONFLICT;
    }
    json_object_object_add(doc, "remote_job", json_object_get(pw->remote_job));
    if (pw->state)
        json_object_object_add(doc, "state", json_object_new_string(pw->state));
    if (pw->error)
        json_object_object_add(doc, "error", json_object_new_string(pw->error));
    json_object_object_add(doc, "last_update_time", json_object_new_int64(mlr_now_ms()));
    return MLR_OK;
}

static void job_free(struct poll_job *j)
{
    json_object_put(j->doc);
    free(j->input);
    free(j);
}

static void job_end(struct poll_job *j)
{
    struct batch_poller *bp = j->bp;
    job_free(j);
    bp->inflight--;
    pump(bp);
}

struct write_ctx {
    struct poll_write pw;
    struct poll_job *job;
};

static void on_written(const struct store_write_result *r, void *data)
{
    struct write_ctx *wc = data;
    struct poll_job *j = wc->job;
    /* ECONFLICT: the task became final meanwhile; ENOTFOUND: it was deleted. Both are fine. */
    if (r->status != MLR_OK && r->status != MLR_ECONFLICT && r->status != MLR_ENOTFOUND) {
        const char *kv[] = {"task_id", j->id, "error", mlr_strerror(r->status), "model_id",
                            j->model_id};
        mlr_log_kv(MLR_LOG_ERROR, "batch", "cannot update the batch task", kv,
                   j->model_id[0] ? 3 : 2);
    }
    json_object_put(wc->pw.remote_job);
    free(wc->pw.error);
    free(wc);
    job_end(j);
}

/* Takes ownership of @remote_job and @error. */
static void write_outcome(struct poll_job *j, struct json_object *remote_job, const char *state,
                          char *error)
{
    struct write_ctx *wc = mlr_xcalloc(1, sizeof(*wc));
    wc->pw.remote_job = remote_job;
    wc->pw.state = state;
    wc->pw.error = error;
    wc->job = j;
    if (j->bp->closing ||
        store_doc_update(j->bp->w->store, STORE_TASK, j->id, poll_patch, &wc->pw,
                         on_written, wc) != MLR_OK) {
        json_object_put(remote_job);
        free(error);
        free(wc);
        job_end(j);
    }
}

/* ---------------------------------- one status call ---------------------------------- */

/* A copy of the task's remote_job to edit. */
static struct json_object *remote_job_copy(struct poll_job *j)
{
    struct json_object *rj = get(j->doc, "remote_job"), *out = NULL;
    if (rj && json_object_is_type(rj, json_type_object))
        json_object_deep_copy(rj, &out, NULL);
    return out ? out : json_object_new_object();
}

static void poll_failed(struct poll_job *j, const char *reason)
{
    struct json_object *rj = remote_job_copy(j);
    int n = json_object_get_int(get(rj, "num_of_retries")) + 1;
    json_object_object_add(rj, "num_of_retries", json_object_new_int(n));
    const char *kv[] = {"task_id", j->id, "error", reason, "model_id", j->model_id};
    mlr_log_kv(MLR_LOG_WARN, "batch", "batch job status call failed", kv, j->model_id[0] ? 3 : 2);
    if (n > MAX_RETRIES)
        write_outcome(j, rj, "UNREACHABLE", mlr_xstrdup(reason));
    else
        write_outcome(j, rj, NULL, NULL);
}

static void on_status(struct json_object *response, const struct workers_error *e,
                      long upstream_status, void *data)
{
    struct poll_job *j = data;
    struct json_object *r0 = first(get(response, "inference_results"));
    struct json_object *map = get(first(get(r0, "output")), "dataAsMap");
    UNUSED(upstream_status);
    if (j->bp->closing) {
        job_end(j);
        return;
    }
    if (e || map == NULL || !json_object_is_type(map, json_type_object)) {
        poll_failed(j, e ? e->reason : "Couldn't fetch status of the transform job");
        return;
    }
    struct json_object *rj = remote_job_copy(j);
    json_object_object_foreach(map, k, v)
        json_object_object_add(rj, k, json_object_get(v)); /* consumes the new reference */
    /* "More than 10 failures in a row": an answer starts the count again. */
    if (get(rj, "num_of_retries"))
        json_object_object_add(rj, "num_of_retries", json_object_new_int(0));
    struct mlr_settings *s = workers_settings_get(j->bp->w);
    const char *state = workers_batch_state(s, rj);
    mlr_settings_unref(s);
    write_outcome(j, rj, state, NULL);
}

static void on_job_deployment(struct deployment *d, const char *why, void *data)
{
    struct poll_job *j = data;
    struct workers_error e;
    struct json_object *action = NULL;
    if (j->bp->closing) {
        job_end(j);
        return;
    }
    if (d == NULL) {
        poll_failed(j, why);
        return;
    }
    if (workers_batch_action(d->connector, "BATCH_PREDICT_STATUS", &action, &e) != MLR_OK) {
        poll_failed(j, e.reason);
        return;
    }
    struct json_object *req = j->input ? json_tokener_parse(j->input) : NULL;
    struct json_object *body = json_object_new_object();
    json_object_object_add(body, "parameters",
                           workers_batch_params(req, get(j->doc, "remote_job")));
    json_object_put(req);
    workers__action_run(j->bp->w, d, "BATCH_PREDICT_STATUS", action, body, on_status, j);
    json_object_put(body);
    json_object_put(action);
}

/* ---------------------------------- rounds ---------------------------------- */

/* Starts queued calls up to the cap; ends the round when none is left. */
static void pump(struct batch_poller *bp)
{
    while (bp->queue && bp->inflight < POLL_CONCURRENCY && !bp->closing) {
        struct poll_job *j = bp->queue;
        bp->queue = j->next;
        bp->inflight++;
        struct mlr_settings *s = workers_settings_get(bp->w);
        int enabled = mlr_settings_bool(s, MLR_S_OFFLINE_BATCH_ENABLED);
        mlr_settings_unref(s);
        if (!enabled) { /* the feature is off: leave the job as it is */
            job_end(j);
            return;
        }
        workers__deployment_for(bp->w, j->model_id[0] ? j->model_id : NULL, on_job_deployment,
                                j);
    }
    if (bp->inflight > 0 || bp->queue) /* (closing: workers__batch_free() drops the queue) */
        return;
    bp->round = 0;
    arm(bp);
}

static void on_listed(int status, struct store_task *tasks, int n, void *data)
{
    struct batch_poller *bp = data;
    if (status != MLR_OK && !bp->closing)
        mlr_log(MLR_LOG_ERROR, "batch", "cannot list batch tasks: %s", mlr_strerror(status));
    struct poll_job **tail = &bp->queue;
    for (int i = 0; i < n && !bp->closing; i++) {
        struct poll_job *j = mlr_xcalloc(1, sizeof(*j));
        j->bp = bp;
        snprintf(j->id, sizeof(j->id), "%s", tasks[i].id);
        snprintf(j->model_id, sizeof(j->model_id), "%s",
                 tasks[i].model_id ? tasks[i].model_id : "");
        j->doc = tasks[i].doc;
        tasks[i].doc = NULL; /* the job owns the document now */
        j->input = tasks[i].input ? mlr_xstrdup(tasks[i].input) : NULL;
        *tail = j;
        tail = &j->next;
    }
    pump(bp);
}

static void on_tick(uv_timer_t *t)
{
    struct batch_poller *bp = container_of(t, struct batch_poller, timer);
    if (bp->closing || bp->round)
        return;
    struct mlr_settings *s = workers_settings_get(bp->w);
    int64_t interval = mlr_settings_time_ms(s, MLR_S_BATCH_POLL_INTERVAL);
    mlr_settings_unref(s);
    if (interval == 0 || mlr_mono_ms() - bp->last_round_ms < interval) {
        arm(bp);
        return;
    }
    bp->last_round_ms = mlr_mono_ms();
    bp->round = 1;
    if (store_task_watch_list(bp->w->store, "BATCH_PREDICTION", POLL_BATCH, on_listed, bp) !=
        MLR_OK) {
        bp->round = 0;
        arm(bp);
    }
}

/*
 * Arms the timer. It fires every interval, but at least once a second, so a shorter interval set
 * by a PUT applies within a second rather than after the old one; on_tick() starts a round only
 * once the interval since the last round has passed. An interval of 0 turns polling off.
 */
static void arm(struct batch_poller *bp)
{
    if (bp->closing)
        return;
    struct mlr_settings *s = workers_settings_get(bp->w);
    int64_t ms = mlr_settings_time_ms(s, MLR_S_BATCH_POLL_INTERVAL);
    mlr_settings_unref(s);
    ms = ms == 0 || ms > 1000 ? 1000 : ms < POLL_MIN_MS ? POLL_MIN_MS : ms;
    uv_timer_start(&bp->timer, on_tick, (uint64_t)ms, 0);
}

/* ---------------------------------- lifecycle ---------------------------------- */

void workers__poller_start(struct workers *w)
{
    struct batch_poller *bp = mlr_xcalloc(1, sizeof(*bp));
    bp->w = w;
    uv_timer_init(w->loop, &bp->timer);
    bp->last_round_ms = mlr_mono_ms();
    w->poller = bp;
    arm(bp);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct batch_poller *bp = container_of((uv_timer_t *)h, struct batch_poller, timer);
    bp->timer_closed = 1;
}

void workers__poller_stop(struct workers *w)
{
    struct batch_poller *bp = w->poller;
    if (bp == NULL || bp->closing)
        return;
    bp->closing = 1;
    uv_close((uv_handle_t *)&bp->timer, on_timer_closed);
}

void workers__poller_free(struct workers *w)
{
    struct batch_poller *bp = w->poller;
    if (bp == NULL)
        return;
    assert(bp->inflight == 0 && (bp->timer_closed || !bp->closing));
    while (bp->queue) {
        struct poll_job *j = bp->queue;
        bp->queue = j->next;
        job_free(j);
    }
    free(bp);
    w->poller = NULL;
}
