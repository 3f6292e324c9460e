/*
 * batch.c — batch ingestion jobs (BATCH_INGEST tasks, spec §7): push many inputs through a
 * model, durably, with bounded memory.
 *
 * A job's input (`text_docs` or `inputs`) is stored once, with its task. The job is cut into
 * batches of batch_size items. A batch of text_docs is one predict whose upstream request carries
 * all its docs (through the connector's pre/post-process functions); a batch of inputs is
 * batch_size predicts, one per input. At most max_concurrency batches run at once; each finished
 * batch is written as one row with its results, in the same transaction as the task's progress
 * counters (store_batch_put), and then dropped from memory. So memory is the parsed input plus
 * max_concurrency batches, whatever the job's size.
 *
 * Durability: after a crash the task is claimed again (it was RUNNING), the batches that have a
 * row are skipped and the others run; a batch is recorded at most once (unique key), so every
 * input appears exactly once in the results. A graceful stop lets running batches finish and
 * record, then puts the task back to CREATED so the next start resumes it. A cancel stops it.
 * Each recorded batch restarts the task-timeout clock and renews the lease, so
 * ml_task_timeout_in_seconds bounds the time without progress, not the length of the job.
 *
 * Failures: a predict failing with 429, 5xx or a transport error is retried up to max_retries
 * times (exponential backoff from 100 ms, at most 5 s; on top of the connector's own retries),
 * then its items are recorded with the error. The job ends COMPLETED, COMPLETED_WITH_ERROR (some
 * items failed) or FAILED (all failed).
 *
 * Fairness: jobs on the same model queue for its client_config.max_connection in arrival order
 * (predict.c), and each job keeps at most max_concurrency batches there, so concurrent jobs
 * take turns.
 *
 * Loop thread, except the input parse and the read of recorded batches, which run on libuv's
 * thread pool at start.
 */
#include "workers_int.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#define IAE "illegal_argument_exception"
#define RETRY_FIRST_MS 100
#define RETRY_MAX_MS 5000

/* ---------------------------------- validation (pure) ---------------------------------- */

/* Reads optional integer @key of @body into *out (default kept), within [lo, hi]. */
static int int_field(struct json_object *body, const char *key, int lo, int hi, int *out,
                     struct workers_error *e)
{
    struct json_object *v = NULL;
    if (!json_object_object_get_ex(body, key, &v) || v == NULL)
        return MLR_OK;
    if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < lo ||
        json_object_get_int64(v) > hi)
        return workers_error_set(e, 400, IAE, "%s must be an integer between %d and %d", key, lo,
                                 hi);
    *out = json_object_get_int(v);
    return MLR_OK;
}

static int items_check(struct json_object *items, int text, struct workers_error *e)
{
    const char *name = text ? "text_docs" : "inputs";
    if (!json_object_is_type(items, json_type_array) || json_object_array_length(items) == 0)
        return workers_error_set(e, 400, IAE, "%s must be a non-empty array", name);
    size_t n = json_object_array_length(items);
    for (size_t i = 0; i < n; i++) {
        struct json_object *it = json_object_array_get_idx(items, i), *p = NULL;
        if (text && !json_object_is_type(it, json_type_string))
            return workers_error_set(e, 400, IAE, "text_docs[%zu] is not a string", i);
        if (!text && (!json_object_is_type(it, json_type_object) ||
                      !json_object_object_get_ex(it, "parameters", &p) ||
                      !json_object_is_type(p, json_type_object)))
            return workers_error_set(e, 400, IAE,
                                     "inputs[%zu] must be an object with a \"parameters\" object",
                                     i);
    }
    return MLR_OK;
}

int workers_batch_ingest_build(struct json_object *body, char **input, int64_t *total,
                               struct workers_error *e)
{
    static const char *const known[] = {"text_docs", "inputs", "batch_size", "max_concurrency",
                                        "max_retries"};
    if (!json_object_is_type(body, json_type_object))
        return workers_error_set(e, 400, IAE, "the request body must be a JSON object");
    json_object_object_foreach(body, key, val)
    {
        UNUSED(val);
        size_t k = 0;
        while (k < sizeof(known) / sizeof(known[0]) && strcmp(known[k], key) != 0)
            k++;
        if (k == sizeof(known) / sizeof(known[0]))
            return workers_error_set(e, 400, IAE, "unknown field [%s] in a batch ingest request",
                                     key);
    }
    struct json_object *docs = NULL, *inputs = NULL;
    json_object_object_get_ex(body, "text_docs", &docs);
    json_object_object_get_ex(body, "inputs", &inputs);
    if ((docs == NULL) == (inputs == NULL))
        return workers_error_set(e, 400, IAE, "give exactly one of text_docs and inputs");
    int batch_size = WORKERS_BATCH_SIZE, concurrency = WORKERS_BATCH_CONCURRENCY,
        retries = WORKERS_BATCH_RETRIES;
    int rc = items_check(docs ? docs : inputs, docs != NULL, e);
    if (rc == MLR_OK)
        rc = int_field(body, "batch_size", 1, 10000, &batch_size, e);
    if (rc == MLR_OK)
        rc = int_field(body, "max_concurrency", 1, 1024, &concurrency, e);
    if (rc == MLR_OK)
        rc = int_field(body, "max_retries", 0, 100, &retries, e);
    if (rc != MLR_OK)
        return rc;
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, docs ? "text_docs" : "inputs", json_object_get(docs ? docs : inputs));
    json_object_object_add(o, "batch_size", json_object_new_int(batch_size));
    json_object_object_add(o, "max_concurrency", json_object_new_int(concurrency));
    json_object_object_add(o, "max_retries", json_object_new_int(retries));
    *input = mlr_xstrdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    *total = (int64_t)json_object_array_length(docs ? docs : inputs);
    json_object_put(o);
    return MLR_OK;
}

/* ---------------------------------- job state ---------------------------------- */

struct batch_job;
struct batch_run;

/* One predict call: a whole text_docs batch, or one input. */
struct unit {
    struct batch_run *run;
    int off;                      /* first item, relative to the batch */
    int count;                    /* items it covers */
    int attempt;                  /* retries done */
    int timer_open;               /* backoff timer initialised (must be closed) */
    uv_timer_t timer;             /* backoff before a retry */
};

/* One batch in flight. */
struct batch_run {
    struct batch_job *bj;
    int64_t first;                /* index of its first item in the job */
    int count;                    /* items */
    int nunits;
    int pending;                  /* units not finished */
    int closing;                  /* backoff timers still closing */
    int failed;                   /* items failed */
    struct json_object *results;  /* array of count result items */
    struct batch_run *next;       /* the job's list of runs whose units are not all done */
    struct unit units[];
};

struct batch_job {
    struct workers *w;
    struct queue_job *job;
    uv_work_t prep;               /* input parse on the thread pool */
    struct json_object *input;    /* parsed task input */
    struct json_object *items;    /* borrowed from input: text_docs or inputs */
    int text;                     /* text_docs mode */
    int batch_size, max_concurrency, max_retries;
    int64_t nitems;
    int nbatches;
    unsigned char *done;          /* per batch: recorded */
    struct batch_run *runs;       /* batches whose units are not all done */
    int next;                     /* next batch to consider */
    int inflight;                 /* batches running or being recorded */
    int64_t completed, failed;    /* items recorded */
    int hold;                     /* > 0: the job must not end yet (preparing, or a loop over
                                   * its runs is under way); whoever drops it calls
                                   * maybe_finish() */
    int stopping;                 /* launch nothing more */
    enum queue_task_state stop_state; /* with stopping: CREATED (pause), CANCELLED or FAILED */
    char error[1024];             /* first item error, for the task's error text */
    char prep_error[256];         /* the input could not be read */
    struct batch_job *next_job;   /* the workers' list of running jobs */
};

static void launch(struct batch_job *bj);
static void unit_start(struct unit *u);
static void unit_done(struct unit *u);

static void job_unlink(struct batch_job *bj)
{
    for (struct batch_job **pp = &bj->w->batch_jobs; *pp; pp = &(*pp)->next_job) {
        if (*pp == bj) {
            *pp = bj->next_job;
            return;
        }
    }
}

/* Ends the job: sets its outcome and hands it back to the queue. */
static void job_finish(struct batch_job *bj)
{
    struct queue_job *job = bj->job;
    if (bj->prep_error[0]) {
        job->state = QUEUE_STATE_FAILED;
        job->error = mlr_xstrdup(bj->prep_error);
    } else if (bj->stopping) {
        job->state = bj->stop_state;
        if (bj->stop_state == QUEUE_STATE_FAILED)
            job->error = mlr_xstrdup(bj->error);
    } else {
        struct json_object *progress = json_object_new_object();
        json_object_object_add(progress, "total", json_object_new_int64(bj->nitems));
        json_object_object_add(progress, "completed", json_object_new_int64(bj->completed));
        json_object_object_add(progress, "failed", json_object_new_int64(bj->failed));
        job->task_fields = json_object_new_object();
        json_object_object_add(job->task_fields, "progress", progress); /* consumes progress */
        job->state = bj->failed == 0       ? QUEUE_STATE_COMPLETED
                     : bj->completed == 0 ? QUEUE_STATE_FAILED
                                          : QUEUE_STATE_COMPLETED_WITH_ERROR;
        if (bj->failed > 0)
            job->error = mlr_xasprintf("%lld of %lld inputs failed; the first error: %s",
                                       (long long)bj->failed, (long long)bj->nitems, bj->error);
    }
    job_unlink(bj);
    json_object_put(bj->input);
    free(bj->done);
    free(bj);
    queue_job_done(job);
}

static void maybe_finish(struct batch_job *bj)
{
    if (bj->hold == 0 && bj->inflight == 0 && (bj->stopping || bj->next >= bj->nbatches))
        job_finish(bj);
}

/* Stops launching batches; units waiting to retry give up now rather than when their timer
 * fires, so a stop or a cancel is not held up by backoffs. Calls in flight finish. */
static void stop_job(struct batch_job *bj, enum queue_task_state st)
{
    if (bj->stopping)
        return;
    bj->stopping = 1;
    bj->stop_state = st;
    bj->hold++;
    struct batch_run *r = bj->runs;
    while (r) {
        struct batch_run *next = r->next; /* r may be released below */
        for (int i = 0; i < r->nunits; i++) {
            struct unit *u = &r->units[i];
            if (!u->timer_open || !uv_is_active((uv_handle_t *)&u->timer))
                continue;
            uv_timer_stop(&u->timer);
            int last = r->pending == 1;
            unit_done(u);
            if (last)
                break;
        }
        r = next;
    }
    bj->hold--;
}

/* ---------------------------------- one batch ---------------------------------- */

static void run_free(struct batch_run *r)
{
    json_object_put(r->results);
    free(r);
}

static void on_unit_timer_closed(uv_handle_t *h)
{
    struct unit *u = container_of((uv_timer_t *)h, struct unit, timer);
    struct batch_run *r = u->run;
    if (--r->closing == 0)
        run_free(r);
}

/* Frees @r once every backoff timer it opened is closed. */
static void run_release(struct batch_run *r)
{
    for (int i = 0; i < r->nunits; i++) {
        if (r->units[i].timer_open) {
            r->closing++;
            uv_close((uv_handle_t *)&r->units[i].timer, on_unit_timer_closed);
        }
    }
    if (r->closing == 0)
        run_free(r);
}

static void on_batch_recorded(int status, int applied, void *data)
{
    struct batch_run *r = data;
    struct batch_job *bj = r->bj;
    if (status != MLR_OK) {
        snprintf(bj->error, sizeof(bj->error), "cannot record the results of a batch: %s",
                 mlr_strerror(status));
        stop_job(bj, QUEUE_STATE_FAILED);
    } else if (applied == STORE_BATCH_NOT_RUNNING) { /* cancelled, timed out or deleted */
        stop_job(bj, QUEUE_STATE_CANCELLED);
    } else { /* recorded now, or by another claimer of the same task before: done either way */
        bj->completed += r->count - r->failed;
        bj->failed += r->failed;
        bj->done[r->first / bj->batch_size] = 1;
    }
    bj->inflight--;
    run_release(r);
    launch(bj);
    maybe_finish(bj);
}

/* Every unit of @r finished: record the batch (or drop it if the job is stopping). */
static void run_complete(struct batch_run *r)
{
    struct batch_job *bj = r->bj;
    if (bj->stopping) { /* the batch runs again after a restart, or never (cancel) */
        bj->inflight--;
        run_release(r);
        maybe_finish(bj);
        return;
    }
    struct store_batch_result b = {
        .task_id = bj->job->id,
        .first_index = r->first,
        .n_items = r->count,
        .n_failed = r->failed,
        .results = json_object_to_json_string_ext(r->results, JSON_C_TO_STRING_PLAIN),
        .lease_until_ms = queue_job_progress(bj->job),
    };
    if (store_batch_put(bj->w->store, &b, on_batch_recorded, r) != MLR_OK)
        on_batch_recorded(MLR_ECLOSED, 0, r);
}

static void unit_set(struct unit *u, int k, struct json_object *item)
{
    json_object_array_put_idx(u->run->results, (size_t)(u->off + k), item); /* consumes item */
}

static void unit_fail(struct unit *u, const struct workers_error *e)
{
    struct batch_run *r = u->run;
    if (r->bj->error[0] == '\0')
        snprintf(r->bj->error, sizeof(r->bj->error), "%s", e->reason);
    for (int k = 0; k < u->count; k++) {
        struct json_object *err = json_object_new_object(), *item = json_object_new_object();
        json_object_object_add(err, "status", json_object_new_int(e->status));
        json_object_object_add(err, "type", json_object_new_string(e->type));
        json_object_object_add(err, "reason", json_object_new_string(e->reason));
        json_object_object_add(item, "index", json_object_new_int64(r->first + u->off + k));
        json_object_object_add(item, "error", err); /* consumes err */
        unit_set(u, k, item);
    }
    r->failed += u->count;
}

static struct json_object *result_item(int64_t index, struct json_object *inference_results)
{
    struct json_object *item = json_object_new_object();
    json_object_object_add(item, "index", json_object_new_int64(index));
    json_object_object_add(item, "inference_results", inference_results); /* consumes it */
    return item;
}

/*
 * text_docs: the model's outputs, in order, are one per doc (embedding-style functions answer
 * with one tensor per doc, possibly over several inference results). Anything else cannot be
 * split per doc and fails the batch's items.
 */
static int unit_split(struct unit *u, struct json_object *response, struct workers_error *e)
{
    struct json_object *irs = NULL, *flat = json_object_new_array();
    json_object_object_get_ex(response, "inference_results", &irs);
    size_t nirs = json_object_is_type(irs, json_type_array) ? json_object_array_length(irs) : 0;
    for (size_t i = 0; i < nirs; i++) {
        struct json_object *ir = json_object_array_get_idx(irs, i), *out = NULL, *sc = NULL;
        json_object_object_get_ex(ir, "output", &out);
        json_object_object_get_ex(ir, "status_code", &sc);
        size_t nout = json_object_is_type(out, json_type_array) ? json_object_array_length(out)
                                                                : 0;
        for (size_t k = 0; k < nout; k++) {
            struct json_object *one = json_object_new_object(), *arr = json_object_new_array();
            json_object_array_add(arr, json_object_get(json_object_array_get_idx(out, k)));
            json_object_object_add(one, "output", arr); /* consumes arr */
            if (sc)
                json_object_object_add(one, "status_code", json_object_get(sc));
            json_object_array_add(flat, one); /* consumes one */
        }
    }
    size_t n = json_object_array_length(flat);
    if (n != (size_t)u->count) {
        json_object_put(flat);
        return workers_error_set(e, 400, IAE,
                                 "the model returned %zu outputs for %d text_docs; batch "
                                 "ingestion needs one output per doc",
                                 n, u->count);
    }
    for (int k = 0; k < u->count; k++) {
        struct json_object *ir = json_object_new_array();
        json_object_array_add(ir, json_object_get(json_object_array_get_idx(flat, (size_t)k)));
        unit_set(u, k, result_item(u->run->first + u->off + k, ir));
    }
    json_object_put(flat);
    return MLR_OK;
}

static int retriable(const struct workers_error *e)
{
    return e->status == 429 || e->status >= 500;
}

static void on_unit_timer(uv_timer_t *t)
{
    unit_start(container_of(t, struct unit, timer));
}

static void unit_done(struct unit *u)
{
    struct batch_run *r = u->run;
    if (--r->pending > 0)
        return;
    for (struct batch_run **pp = &r->bj->runs; *pp; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    }
    run_complete(r);
}

static void on_unit_predicted(struct json_object *response, const struct workers_error *e,
                              void *data)
{
    struct unit *u = data;
    struct batch_job *bj = u->run->bj;
    struct workers_error split_error;
    if (e == NULL && bj->text && unit_split(u, response, &split_error) != MLR_OK)
        e = &split_error;
    else if (e == NULL && !bj->text)
        unit_set(u, 0, result_item(u->run->first + u->off,
                                   json_object_get(json_object_object_get(response,
                                                                          "inference_results"))));
    if (e && retriable(e) && u->attempt < bj->max_retries && !bj->stopping) {
        int64_t delay = (int64_t)RETRY_FIRST_MS << (u->attempt < 6 ? u->attempt : 6);
        u->attempt++;
        if (!u->timer_open) {
            uv_timer_init(bj->w->loop, &u->timer);
            u->timer_open = 1;
        }
        uv_timer_start(&u->timer, on_unit_timer, (uint64_t)(delay < RETRY_MAX_MS ? delay
                                                                                 : RETRY_MAX_MS),
                       0);
        return;
    }
    if (e)
        unit_fail(u, e);
    unit_done(u);
}

/* The predict body of unit @u. */
static struct json_object *unit_body(struct unit *u)
{
    struct batch_job *bj = u->run->bj;
    int64_t first = u->run->first + u->off;
    if (!bj->text)
        return json_object_get(json_object_array_get_idx(bj->items, (size_t)first));
    struct json_object *docs = json_object_new_array_ext(u->count);
    struct json_object *body = json_object_new_object();
    for (int k = 0; k < u->count; k++) {
        struct json_object *doc = json_object_array_get_idx(bj->items, (size_t)(first + k));
        json_object_array_add(docs, json_object_get(doc));
    }
    json_object_object_add(body, "text_docs", docs); /* consumes docs */
    return body;
}

static void unit_start(struct unit *u)
{
    struct batch_job *bj = u->run->bj;
    if (bj->stopping) { /* a retry due after a stop: the batch will not be recorded anyway */
        unit_done(u);
        return;
    }
    struct json_object *body = unit_body(u);
    workers_predict(bj->w, bj->job->model_id, body, on_unit_predicted, u);
    json_object_put(body);
}

static void run_start(struct batch_job *bj, int batch)
{
    int64_t first = (int64_t)batch * bj->batch_size;
    int count = (int)(bj->nitems - first < bj->batch_size ? bj->nitems - first : bj->batch_size);
    int nunits = bj->text ? 1 : count;
    struct batch_run *r = mlr_xcalloc(1, sizeof(*r) + (size_t)nunits * sizeof(struct unit));
    r->bj = bj;
    r->first = first;
    r->count = count;
    r->nunits = nunits;
    r->pending = nunits;
    r->results = json_object_new_array_ext(count);
    for (int i = 0; i < nunits; i++) {
        r->units[i].run = r;
        r->units[i].off = bj->text ? 0 : i;
        r->units[i].count = bj->text ? count : 1;
    }
    bj->inflight++;
    r->next = bj->runs;
    bj->runs = r;
    for (int i = 0; i < nunits; i++) /* a unit may finish at once: r may be gone after the last */
        unit_start(&r->units[i]);
}

/* Starts batches up to max_concurrency. */
static void launch(struct batch_job *bj)
{
    bj->hold++; /* a batch recorded synchronously must not end the job under this loop */
    while (!bj->stopping && bj->inflight < bj->max_concurrency && bj->next < bj->nbatches) {
        int b = bj->next++;
        if (!bj->done[b])
            run_start(bj, b);
    }
    bj->hold--;
}

/* ---------------------------------- start ---------------------------------- */

static int int_of(struct json_object *o, const char *key, int dflt)
{
    struct json_object *v = NULL;
    return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_int)
               ? json_object_get_int(v)
               : dflt;
}

/* Thread pool: parses the input and reads which batches are already recorded. */
static void prep_run(uv_work_t *req)
{
    struct batch_job *bj = container_of(req, struct batch_job, prep);
    struct queue_job *job = bj->job;
    bj->input = job->input ? json_tokener_parse(job->input) : NULL;
    free(job->input); /* parsed: the text is not needed again, and it can be large */
    job->input = NULL;
    struct json_object *items = NULL;
    bj->text = json_object_object_get_ex(bj->input, "text_docs", &items);
    if (!bj->text)
        json_object_object_get_ex(bj->input, "inputs", &items);
    if (!json_object_is_type(items, json_type_array) || json_object_array_length(items) == 0) {
        snprintf(bj->prep_error, sizeof(bj->prep_error), "the task's input is missing or "
                                                         "unreadable");
        return;
    }
    bj->items = items;
    bj->nitems = (int64_t)json_object_array_length(items);
    bj->batch_size = int_of(bj->input, "batch_size", WORKERS_BATCH_SIZE);
    bj->max_concurrency = int_of(bj->input, "max_concurrency", WORKERS_BATCH_CONCURRENCY);
    bj->max_retries = int_of(bj->input, "max_retries", WORKERS_BATCH_RETRIES);
    if (bj->batch_size < 1 || bj->max_concurrency < 1 || bj->max_retries < 0) {
        snprintf(bj->prep_error, sizeof(bj->prep_error), "the task's input is invalid");
        return;
    }
    bj->nbatches = (int)((bj->nitems + bj->batch_size - 1) / bj->batch_size);
    bj->done = mlr_xcalloc((size_t)bj->nbatches, 1);
    struct store_batch_done d = {0};
    int rc = store_batch_done(bj->w->store, job->id, &d);
    if (rc != MLR_OK) {
        snprintf(bj->prep_error, sizeof(bj->prep_error), "cannot read the job's progress: %s",
                 mlr_strerror(rc));
        return;
    }
    for (int i = 0; i < d.n; i++) {
        int64_t b = d.first_index[i] / bj->batch_size;
        if (b >= 0 && b < bj->nbatches)
            bj->done[b] = 1;
    }
    bj->completed = d.items - d.failed;
    bj->failed = d.failed;
    free(d.first_index);
}

static void prep_after(uv_work_t *req, int status)
{
    struct batch_job *bj = container_of(req, struct batch_job, prep);
    bj->hold--; /* taken by workers__batch_start() */
    if (status != 0 && bj->prep_error[0] == '\0')
        snprintf(bj->prep_error, sizeof(bj->prep_error), "the job could not be started");
    if (bj->prep_error[0] == '\0') {
        if (bj->completed + bj->failed > 0) {
            char n[64];
            snprintf(n, sizeof(n), "%lld", (long long)(bj->completed + bj->failed));
            const char *kv[] = {"task_id", bj->job->id, "model_id", bj->job->model_id,
                                "recorded_items", n};
            mlr_log_kv(MLR_LOG_INFO, "workers", "resuming batch ingestion job", kv, 3);
        }
        launch(bj);
    }
    maybe_finish(bj);
}

int workers__batch_start(struct workers *w, struct queue_job *job)
{
    struct batch_job *bj = mlr_xcalloc(1, sizeof(*bj));
    bj->w = w;
    bj->job = job;
    bj->hold = 1; /* until prep_after(): the thread pool is using bj */
    bj->next_job = w->batch_jobs;
    w->batch_jobs = bj;
    if (uv_queue_work(w->loop, &bj->prep, prep_run, prep_after) != 0) {
        snprintf(bj->prep_error, sizeof(bj->prep_error), "cannot schedule the job");
        bj->hold = 0;
        job_finish(bj);
    }
    return 1;
}

/* stop_job() may finish a job and unlink it: walk a snapshot of the list. */
static void stop_matching(struct workers *w, const char *task_id, enum queue_task_state st)
{
    int n = 0;
    for (struct batch_job *bj = w->batch_jobs; bj; bj = bj->next_job)
        n++;
    struct batch_job **all = mlr_xcalloc((size_t)(n > 0 ? n : 1), sizeof(*all));
    n = 0;
    for (struct batch_job *bj = w->batch_jobs; bj; bj = bj->next_job)
        if (task_id == NULL || strcmp(bj->job->id, task_id) == 0)
            all[n++] = bj;
    for (int i = 0; i < n; i++) {
        stop_job(all[i], st);
        maybe_finish(all[i]);
    }
    free(all);
}

void workers__batch_stop_all(struct workers *w)
{
    stop_matching(w, NULL, QUEUE_STATE_CREATED); /* resumed by the next start */
}

void workers_batch_cancelled(struct workers *w, const char *task_id)
{
    stop_matching(w, task_id, QUEUE_STATE_CANCELLED);
}
