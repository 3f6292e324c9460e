/*
 * dispatch.c — the task dispatcher: claim → run on the thread pool → finish, in batches.
 *
 * Flow. queue_kick() (after an enqueue committed) or the timer starts a claim of up to
 * `concurrency` tasks minus those in flight — one store op, one shared group commit. Each
 * claimed task is handed to the runner on libuv's thread pool. Finished jobs collect in `ready`;
 * one finish op writes all of them (again one commit), then the runner's committed() hook runs
 * and waiters are answered. There is at most one claim and one finish op outstanding, so under
 * load both naturally batch: while one commit is in flight, the next batch accumulates.
 *
 * Time limits. A claim gives each task a lease of task-timeout + LEASE_SLACK_MS. A job running
 * longer than the task timeout is failed ("timeout after N seconds") by a separate finish; its
 * late result is then ignored by the store, since the task is no longer RUNNING. The lease only
 * matters if this process dies without a restart recovery (another node claims it then).
 *
 * Statistics (queue_stats_get()): tasks claimed and finished by type and final state, tasks
 * running, and how long tasks waited in CREATED; plain increments at claim and finish.
 *
 * Loop thread only, except run() on pool threads. Costs: O(batch) per op; waits are a list
 * scanned per finished batch (few clients wait at a time).
 */
#include "queue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#define LEASE_SLACK_MS 10000
#define PURGE_EVERY_MS 60000
#define PURGE_BATCH 1000

struct waiter {
    char task_id[STORE_ID_MAX + 1];
    int64_t deadline;             /* monotonic ms */
    queue_wait_cb cb;
    void *data;
    struct waiter *next;
};

struct queue {
    uv_loop_t *loop;
    struct store *store;
    struct queue_runner runner;
    struct queue_options opts;
    uv_timer_t timer;
    int claiming;                 /* a claim op is outstanding */
    int kick_again;               /* a kick came while claiming: claim again when it returns */
    int finishing;                /* a finish op is outstanding */
    int inflight;                 /* claimed jobs not yet finished and committed */
    struct queue_job *running;    /* jobs on the thread pool (for timeouts) */
    struct queue_job *ready;      /* jobs whose run() returned, awaiting a finish op */
    struct waiter *waiters;
    int64_t next_purge;           /* monotonic ms */
    int closing;
    int timer_closed;
    queue_closed_cb closed_cb;    /* called when closing completes */
    void *closed_data;
    struct queue_stats stats;     /* counters for /metrics (loop thread) */
    int peeks;                    /* waiter state reads in flight (several nodes) */
    int peek_again;               /* a task ended during the round: look once more after it */
    struct queue_job *finishing_jobs; /* the outstanding finish op's jobs (linked by _next) */
};

static void kick(struct queue *q);
static void flush(struct queue *q);
static void requeue_ready(struct queue *q, struct queue_job *jobs);

static void limits(struct queue *q, int64_t *timeout, int64_t *retention)
{
    *timeout = 600000;
    *retention = 7LL * 86400000;
    if (q->runner.limits)
        q->runner.limits(q->runner.data, timeout, retention);
}

static void maybe_free(struct queue *q)
{
    if (!q->closing || !q->timer_closed || q->inflight > 0 || q->claiming || q->finishing ||
        q->peeks > 0)
        return;
    queue_closed_cb cb = q->closed_cb;
    void *data = q->closed_data;
    free(q);
    if (cb)
        cb(data);
}

/* ---------------------------------- waits ---------------------------------- */

static void answer_waiters(struct queue *q, const char *task_id, const char *state)
{
    struct waiter **pp = &q->waiters;
    while (*pp) {
        struct waiter *w = *pp;
        if (task_id == NULL || strcmp(w->task_id, task_id) == 0) {
            *pp = w->next;
            w->cb(w->task_id, state, w->data);
            free(w);
        } else {
            pp = &w->next;
        }
    }
}

void queue_wait(struct queue *q, const char *task_id, int64_t timeout_ms, queue_wait_cb cb,
                void *data)
{
    struct waiter *w = mlr_xcalloc(1, sizeof(*w));
    snprintf(w->task_id, sizeof(w->task_id), "%s", task_id);
    w->deadline = mlr_mono_ms() + timeout_ms;
    w->cb = cb;
    w->data = data;
    w->next = q->waiters;
    q->waiters = w;
}

/*
 * Several nodes on one store: a task this node waits for may be claimed and finished by another
 * node, whose finish never reaches this node's waiters. So each tick reads the stored state of
 * every waited-for task and answers the waiters of those that ended elsewhere.
 */
static void peek_waiters(struct queue *q);

struct peek {
    struct queue *q;
    char task_id[STORE_ID_MAX + 1];
};

/* 1 when this node runs or is recording task @id: its own finish answers the waiters, after
 * the runner's committed() hook (a deploy is installed here before its waiters hear of it). */
static int local_job(const struct queue *q, const char *id)
{
    const struct queue_job *lists[] = {q->running, q->ready, q->finishing_jobs};
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
        for (const struct queue_job *j = lists[i]; j; j = j->_next)
            if (strcmp(j->id, id) == 0)
                return 1;
    return 0;
}

static void on_peeked(int status, struct store_doc *d, void *data)
{
    struct peek *p = data;
    struct queue *q = p->q;
    q->peeks--;
    struct json_object *v = NULL;
    enum queue_task_state st;
    if (status == MLR_OK && !q->closing && !local_job(q, p->task_id) &&
        json_object_object_get_ex(d->doc, "state", &v) &&
        queue_task_state_parse(json_object_get_string(v), &st) == MLR_OK &&
        queue_task_state_is_final(st))
        answer_waiters(q, p->task_id, queue_task_state_name(st));
    free(p);
    if (q->peeks == 0 && q->peek_again && !q->closing) {
        q->peek_again = 0;
        peek_waiters(q);
    }
    maybe_free(q);
}

static void peek_waiters(struct queue *q)
{
    if (!store_is_shared(q->store))
        return;
    if (q->peeks > 0) { /* one round at a time */
        q->peek_again = 1;
        return;
    }
    for (struct waiter *w = q->waiters; w; w = w->next) {
        struct peek *p = mlr_xcalloc(1, sizeof(*p));
        p->q = q;
        snprintf(p->task_id, sizeof(p->task_id), "%s", w->task_id);
        if (store_doc_get(q->store, STORE_TASK, w->task_id, 0, on_peeked, p) == MLR_OK)
            q->peeks++;
        else
            free(p);
    }
}

static void expire_waiters(struct queue *q, int64_t now)
{
    struct waiter **pp = &q->waiters;
    while (*pp) {
        struct waiter *w = *pp;
        if (w->deadline <= now) {
            *pp = w->next;
            w->cb(w->task_id, NULL, w->data);
            free(w);
        } else {
            pp = &w->next;
        }
    }
}

/* ---------------------------------- jobs ---------------------------------- */

static void job_free(struct queue_job *j)
{
    json_object_put(j->doc);
    free(j->input);
    json_object_put(j->model_fields);
    json_object_put(j->task_fields);
    free(j->error);
    free(j);
}

static void unlink_running(struct queue *q, struct queue_job *j)
{
    for (struct queue_job **pp = &q->running; *pp; pp = &(*pp)->_next) {
        if (*pp == j) {
            *pp = j->_next;
            j->_next = NULL;
            return;
        }
    }
}

static void work_run(uv_work_t *w)
{
    struct queue_job *j = container_of(w, struct queue_job, _work);
    j->_q->runner.run(j, j->_q->runner.data);
}

void queue_job_done(struct queue_job *j)
{
    struct queue *q = j->_q;
    j->_done = 1;
    unlink_running(q, j);
    j->_next = q->ready;
    q->ready = j;
    flush(q);
}

int64_t queue_job_progress(struct queue_job *j)
{
    int64_t timeout, retention;
    limits(j->_q, &timeout, &retention);
    j->_start_ms = mlr_mono_ms();
    return mlr_now_ms() + timeout + LEASE_SLACK_MS;
}

static void work_after(uv_work_t *w, int status)
{
    struct queue_job *j = container_of(w, struct queue_job, _work);
    struct queue *q = j->_q;
    UNUSED(status);
    j->_done = 1;
    unlink_running(q, j);
    j->_next = q->ready;
    q->ready = j;
    flush(q);
}

/* A task left CREATED: count it and how long it waited since it was created. */
static void count_claim(struct queue *q, const struct queue_job *j)
{
    struct json_object *created = NULL;
    q->stats.claimed[j->type]++;
    q->stats.running[j->type]++;
    if (json_object_object_get_ex(j->doc, "create_time", &created)) {
        int64_t waited = mlr_now_ms() - json_object_get_int64(created);
        mlr_histogram_observe(&q->stats.wait_us, (uint64_t)(waited > 0 ? waited : 0) * 1000);
    }
}

/* A task's outcome was written (or failed to be): it stops running; count its final state. */
static void count_finish(struct queue *q, const struct queue_job *j)
{
    if (!j->_typed)
        return;
    q->stats.running[j->type]--;
    if (j->timed_out) /* the timeout wrote FAILED; the late outcome was not applied */
        q->stats.finished[j->type][QUEUE_STATE_FAILED]++;
    else if (j->applied)
        q->stats.finished[j->type][j->state]++;
}

static struct queue_job *job_new(struct queue *q, struct store_task *t)
{
    struct queue_job *j = mlr_xcalloc(1, sizeof(*j));
    j->_q = q;
    snprintf(j->id, sizeof(j->id), "%s", t->id);
    snprintf(j->model_id, sizeof(j->model_id), "%s", t->model_id ? t->model_id : "");
    j->doc = t->doc;
    t->doc = NULL; /* the job owns the document now */
    j->input = t->input ? mlr_xstrdup(t->input) : NULL;
    j->state = QUEUE_STATE_COMPLETED;
    if (queue_task_type_parse(t->task_type, &j->type) != MLR_OK) {
        j->state = QUEUE_STATE_FAILED;
        j->error = mlr_xasprintf("unknown task type [%s]", t->task_type);
    } else {
        j->_typed = 1;
        count_claim(q, j);
    }
    j->_start_ms = mlr_mono_ms();
    return j;
}

static void start_job(struct queue *q, struct queue_job *j)
{
    q->inflight++;
    if (mlr_log_enabled(MLR_LOG_DEBUG)) {
        const char *kv[] = {"task_id", j->id, "model_id", j->model_id,
                            "task_type", queue_task_type_name(j->type)};
        mlr_log_kv(MLR_LOG_DEBUG, "queue", "task started", kv, j->model_id[0] ? 3 : 1);
    }
    if (j->state == QUEUE_STATE_FAILED) { /* nothing to run: record the failure */
        j->_done = 1;
        j->_next = q->ready;
        q->ready = j;
        return;
    }
    j->_next = q->running;
    q->running = j;
    if (q->runner.start && q->runner.start(j, q->runner.data))
        return; /* runs on the loop; queue_job_done() follows */
    if (uv_queue_work(q->loop, &j->_work, work_run, work_after) != 0) {
        unlink_running(q, j);
        j->state = QUEUE_STATE_FAILED;
        j->error = mlr_xstrdup("cannot schedule the task on the worker pool");
        j->_next = q->ready;
        q->ready = j;
    }
}

/* ---------------------------------- claim ---------------------------------- */

static void on_claimed(int status, struct store_task *tasks, int n, void *data)
{
    struct queue *q = data;
    q->claiming = 0;
    if (status != MLR_OK && status != MLR_ECLOSED)
        mlr_log(MLR_LOG_ERROR, "queue", "claim failed: %s", mlr_strerror(status));
    for (int i = 0; i < n; i++)
        start_job(q, job_new(q, &tasks[i]));
    if (q->ready)
        flush(q);
    /* There may be more; and a kick that came during this claim may announce a task its
     * transaction did not see (written after it began), which must not wait for the tick. */
    if ((n > 0 && status == MLR_OK) || q->kick_again) {
        q->kick_again = 0;
        kick(q);
    }
    maybe_free(q);
}

static void kick(struct queue *q)
{
    int room = q->opts.concurrency - q->inflight;
    if (q->claiming)
        q->kick_again = 1;
    if (q->closing || q->claiming || room <= 0)
        return;
    int64_t timeout, retention;
    limits(q, &timeout, &retention);
    int64_t now = mlr_now_ms();
    int n = room < q->opts.batch ? room : q->opts.batch;
    if (store_task_claim(q->store, n, now, now + timeout + LEASE_SLACK_MS, on_claimed, q) ==
        MLR_OK)
        q->claiming = 1;
}

void queue_kick(struct queue *q)
{
    kick(q);
}

void queue_tasks_finished(struct queue *q)
{
    if (q->waiters)
        peek_waiters(q);
}

/* ---------------------------------- finish ---------------------------------- */

struct finish_batch {
    struct queue *q;
    struct queue_job *jobs;  /* linked by _next */
};

/* Errors a later attempt can get past: the disk may have room or work again. */
static int transient(int status)
{
    return status == MLR_ENOSPC || status == MLR_EIO || status == MLR_EBUSY ||
           status == MLR_ENOMEM || status == MLR_EAGAIN;
}

static void on_finished(int status, const int *applied, int n, void *data)
{
    struct finish_batch *b = data;
    int i = 0, njobs = 0;
    struct queue *q = b->q;
    q->finishing = 0;
    q->finishing_jobs = NULL;
    for (struct queue_job *j = b->jobs; j; j = j->_next)
        njobs++;
    if (status != MLR_OK && status != MLR_ECLOSED && !q->closing &&
        (transient(status) || njobs > 1)) {
        /* The disk refused (full, I/O error). Dropping the outcomes would leave the tasks
         * RUNNING until their lease ends (the task timeout, 10 minutes by default): keep them
         * in flight and write them again at the next tick, and so on until the disk is back.
         * Any other error comes from one outcome that can never be written (a damaged
         * document): one op writes the whole batch, so each is written alone next, and only
         * that one is given up below rather than holding every slot of the queue forever.
         * One line per attempt, not per task: an outage would otherwise flood the log. */
        mlr_log(MLR_LOG_ERROR, "queue", "cannot record task results, retrying%s: %s",
                transient(status) ? "" : " one at a time", mlr_strerror(status));
        for (struct queue_job *j = b->jobs; j && !transient(status); j = j->_next)
            j->_solo = 1;
        requeue_ready(q, b->jobs);
        free(b);
        return;
    }
    for (struct queue_job *j = b->jobs, *next; j; j = next) {
        next = j->_next;
        if (status != MLR_OK) { /* one line per task, so each can be found by its id */
            const char *kv[] = {"task_id", j->id, "error", mlr_strerror(status),
                                "model_id", j->model_id};
            mlr_log_kv(MLR_LOG_ERROR, "queue", "cannot record the task's result", kv,
                       j->model_id[0] ? 3 : 2);
        }
        j->applied = status == MLR_OK && i < n && applied[i];
        i++;
        count_finish(q, j);
        q->runner.committed(j, status, q->runner.data);
        answer_waiters(q, j->id, status == MLR_OK ? queue_task_state_name(j->state) : NULL);
        q->inflight--;
        job_free(j);
    }
    free(b);
    if (q->ready)
        flush(q);
    kick(q);
    maybe_free(q);
}

static void fill_result(struct store_task_result *r, const struct queue_job *j)
{
    r->id = j->id;
    r->state = queue_task_state_name(j->state);
    r->error = j->error;
    r->task_fields = j->task_fields;
    /* Only an outcome that changes the model touches it (a register task leaves it alone). */
    int touches_model = j->model_state != NULL || j->model_fields != NULL;
    r->model_id = j->model_id[0] && touches_model && !j->timed_out ? j->model_id : NULL;
    r->model_state = j->model_state;
    r->model_fields = j->model_fields;
    r->only_if_state = j->only_if_state;
}

/* Puts the jobs of a finish that could not be written back in front of the ready list. */
static void requeue_ready(struct queue *q, struct queue_job *jobs)
{
    while (jobs) {
        struct queue_job *j = jobs;
        jobs = j->_next;
        j->_next = q->ready;
        q->ready = j;
    }
}

/* Writes the outcome of every ready job in one store op. */
static void flush(struct queue *q)
{
    if (q->finishing || q->ready == NULL)
        return;
    struct finish_batch *b = mlr_xcalloc(1, sizeof(*b));
    b->q = q;
    int n = 0, max = q->ready->_solo ? 1 : q->opts.batch;
    while (q->ready && n < max) { /* take up to a batch; the rest waits */
        struct queue_job *j = q->ready;
        q->ready = j->_next;
        j->_next = b->jobs;
        b->jobs = j;
        n++;
    }
    struct store_task_result *r = mlr_xcalloc((size_t)n, sizeof(*r));
    int i = 0;
    for (struct queue_job *j = b->jobs; j; j = j->_next)
        fill_result(&r[i++], j);
    q->finishing = 1;
    q->finishing_jobs = b->jobs;
    int rc = store_task_finish(q->store, r, n, on_finished, b);
    free(r);
    if (rc != MLR_OK)
        on_finished(rc, NULL, 0, b);
}

/* ---------------------------------- timer ---------------------------------- */

/* The ids of a timed-out task, kept until its FAILED state is written (for the log). */
struct timeout_ids {
    char task_id[STORE_ID_MAX + 1];
    char model_id[STORE_ID_MAX + 1];
};

static void on_timeout_written(int status, const int *applied, int n, void *data)
{
    struct timeout_ids *t = data;
    UNUSED(applied);
    UNUSED(n);
    if (status != MLR_OK) {
        const char *kv[] = {"task_id", t->task_id, "error", mlr_strerror(status),
                            "model_id", t->model_id};
        mlr_log_kv(MLR_LOG_ERROR, "queue", "cannot record a task timeout", kv,
                   t->model_id[0] ? 3 : 2);
    }
    free(t);
}

/* Fails jobs that have run longer than the task timeout; their late results are then ignored. */
static void check_timeouts(struct queue *q, int64_t now, int64_t timeout)
{
    for (struct queue_job *j = q->running; j; j = j->_next) {
        if (j->timed_out || now - j->_start_ms < timeout)
            continue;
        j->timed_out = 1;
        char error[64];
        snprintf(error, sizeof(error), "timeout after %lld seconds", (long long)(timeout / 1000));
        struct store_task_result r = {.id = j->id, .state = "FAILED", .error = error};
        const char *kv[] = {"task_id", j->id, "model_id", j->model_id};
        mlr_log_kv(MLR_LOG_WARN, "queue", "task timed out", kv, j->model_id[0] ? 2 : 1);
        struct timeout_ids *t = mlr_xcalloc(1, sizeof(*t));
        snprintf(t->task_id, sizeof(t->task_id), "%s", j->id);
        snprintf(t->model_id, sizeof(t->model_id), "%s", j->model_id);
        if (store_task_finish(q->store, &r, 1, on_timeout_written, t) != MLR_OK)
            free(t);
        answer_waiters(q, j->id, "FAILED");
    }
}

static void on_purged(const struct store_write_result *r, void *data)
{
    UNUSED(data);
    if (r->status == MLR_OK && r->count > 0)
        mlr_log(MLR_LOG_INFO, "queue", "purged %d finished tasks past retention", r->count);
}

static void on_tick(uv_timer_t *t)
{
    struct queue *q = t->data;
    int64_t now = mlr_mono_ms(), timeout, retention;
    limits(q, &timeout, &retention);
    check_timeouts(q, now, timeout);
    expire_waiters(q, now);
    peek_waiters(q);
    flush(q); /* outcomes a failed write left behind */
    if (now >= q->next_purge) {
        q->next_purge = now + PURGE_EVERY_MS;
        store_task_purge(q->store, mlr_now_ms() - retention, PURGE_BATCH, on_purged, q);
    }
    kick(q); /* picks up expired leases and anything a missed kick left behind */
}

/* ---------------------------------- lifecycle ---------------------------------- */

int queue_open(uv_loop_t *loop, struct store *s, const struct queue_options *opts,
               const struct queue_runner *runner, struct queue **out)
{
    struct queue *q = mlr_xcalloc(1, sizeof(*q));
    q->loop = loop;
    q->store = s;
    q->runner = *runner;
    if (opts)
        q->opts = *opts;
    if (q->opts.concurrency <= 0)
        q->opts.concurrency = 4;
    if (q->opts.batch <= 0)
        q->opts.batch = 64;
    if (q->opts.tick_ms <= 0)
        q->opts.tick_ms = 200;
    q->stats.capacity = q->opts.concurrency;
    mlr_histogram_init(&q->stats.wait_us, mlr_metrics_latency_us, mlr_metrics_latency_us_count);
    uv_timer_init(loop, &q->timer);
    q->timer.data = q;
    q->next_purge = mlr_mono_ms() + 5000; /* not during start-up */
    *out = q;
    return MLR_OK;
}

int queue_start(struct queue *q, int *recovered)
{
    int rc = store_task_recover(q->store, recovered);
    if (rc != MLR_OK)
        return rc;
    uv_timer_start(&q->timer, on_tick, (uint64_t)q->opts.tick_ms, (uint64_t)q->opts.tick_ms);
    kick(q);
    return MLR_OK;
}

int queue_inflight(const struct queue *q)
{
    return q->inflight;
}

const struct queue_stats *queue_stats_get(const struct queue *q)
{
    return &q->stats;
}

void queue_running_foreach(const struct queue *q, queue_job_visit_cb cb, void *data)
{
    for (const struct queue_job *j = q->running; j; j = j->_next)
        cb(j->id, j->doc, data);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct queue *q = h->data;
    q->timer_closed = 1;
    maybe_free(q);
}

void queue_close(struct queue *q, queue_closed_cb cb, void *data)
{
    if (q == NULL) {
        if (cb)
            cb(data);
        return;
    }
    q->closing = 1;
    q->closed_cb = cb;
    q->closed_data = data;
    answer_waiters(q, NULL, NULL);
    flush(q); /* outcomes waiting for a retry get one last write (else re-run at next start) */
    uv_close((uv_handle_t *)&q->timer, on_timer_closed);
}
