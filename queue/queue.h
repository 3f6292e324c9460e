/*
 * queue.h — the durable task queue: the task vocabulary of ML Commons (reference §8.4) and the
 * dispatcher that claims task rows from the store, hands them to a runner on libuv's thread pool,
 * and writes their outcome back, all through the store's group commit.
 *
 * Enqueueing is not a queue call: a task row is inserted by the same store transaction as the
 * rows it belongs to (a model and its REGISTER_MODEL task), and the caller then calls
 * queue_kick() so the task is claimed at once instead of at the next tick.
 *
 * Threading: the vocabulary functions are pure; everything else runs on the loop thread except
 * the runner's run() callback, which runs on a thread-pool thread.
 */
#ifndef MLR_QUEUE_H
#define MLR_QUEUE_H

#include <uv.h>

#include "common.h"
#include "store.h"

/* Task types, spelled exactly as ML Commons spells them in task documents. */
#define QUEUE_TASK_TYPE_MAP(XX)                                                                  \
    XX(REGISTER_MODEL)                                                                           \
    XX(DEPLOY_MODEL)                                                                             \
    XX(UNDEPLOY_MODEL)                                                                           \
    XX(PREDICTION)                                                                               \
    XX(BATCH_INGEST)                                                                             \
    XX(BATCH_PREDICTION)

enum queue_task_type {
#define XX(name) QUEUE_TASK_##name,
    QUEUE_TASK_TYPE_MAP(XX)
#undef XX
    QUEUE_TASK__TYPES
};

/* Task states, spelled exactly as ML Commons spells them. */
#define QUEUE_TASK_STATE_MAP(XX)                                                                 \
    XX(CREATED)                                                                                  \
    XX(RUNNING)                                                                                  \
    XX(COMPLETED)                                                                                \
    XX(FAILED)                                                                                   \
    XX(CANCELLED)                                                                                \
    XX(COMPLETED_WITH_ERROR)                                                                     \
    XX(CANCELLING)                                                                               \
    XX(EXPIRED)                                                                                  \
    XX(UNREACHABLE)

enum queue_task_state {
#define XX(name) QUEUE_STATE_##name,
    QUEUE_TASK_STATE_MAP(XX)
#undef XX
    QUEUE_STATE__COUNT
};

/** The spelling of @t ("REGISTER_MODEL"); NULL when out of range. */
const char *queue_task_type_name(enum queue_task_type t);
/** Parses a spelling (exact, upper-case) into @out. Returns MLR_OK or MLR_EINVAL. */
int queue_task_type_parse(const char *s, enum queue_task_type *out);
/** The spelling of @st ("COMPLETED"); NULL when out of range. */
const char *queue_task_state_name(enum queue_task_state st);
/** Parses a spelling (exact, upper-case) into @out. Returns MLR_OK or MLR_EINVAL. */
int queue_task_state_parse(const char *s, enum queue_task_state *out);
/** Non-zero for states a task never leaves (COMPLETED, FAILED, CANCELLED, ...). */
int queue_task_state_is_final(enum queue_task_state st);

struct json_object;

/**
 * Builds a task document as ML Commons shows it (reference §8.1): model_id (when known),
 * task_type, function_name "REMOTE", state, worker_node [@node_id], create_time,
 * last_update_time, is_async. Returns a new object the caller owns.
 */
struct json_object *queue_task_doc_new(enum queue_task_type type, const char *model_id,
                                       enum queue_task_state state, const char *node_id,
                                       int is_async, int64_t now);

/* ------------------------------------------------------------------------------------------ */
/* The dispatcher                                                                             */
/* ------------------------------------------------------------------------------------------ */

struct queue;

/** One claimed task on its way through a runner. */
struct queue_job {
    char id[STORE_ID_MAX + 1];         /* task id */
    enum queue_task_type type;          /* parsed task_type */
    char model_id[STORE_ID_MAX + 1];    /* "" when the task has none */
    struct json_object *doc;            /* the task document as claimed (state RUNNING) */
    char *input;                        /* the task's input (side data), or NULL */
    /* The outcome, written by the runner's run(): */
    enum queue_task_state state;        /* final state; COMPLETED unless run() says otherwise */
    char *error;                        /* heap "error" text, or NULL */
    const char *model_state;            /* static: new model_state, or NULL */
    const char *only_if_state;          /* static: apply the model change only from these
                                         * '|'-separated states */
    struct json_object *model_fields;   /* members merged into the model doc, or NULL */
    struct json_object *task_fields;    /* members merged into the task doc, or NULL */
    void *payload;                      /* runner data for committed() (e.g. a deployment) */
    int timed_out;                      /* the queue failed the task for taking too long */
    int applied;                        /* committed(): the outcome changed the task and model */
    /* private */
    uv_work_t _work;
    struct queue *_q;
    int64_t _start_ms;                  /* monotonic, when run() was queued */
    int _done;                          /* run() returned */
    int _solo;                          /* write this outcome in a finish op of its own */
    int _typed;                         /* type parsed: counted in the queue's statistics */
    struct queue_job *_next;
};

/** What runs tasks: supplied by workers/ (the layer above), called by the queue. */
struct queue_runner {
    /** Thread-pool thread: executes @job and sets its outcome. Must be idempotent. */
    void (*run)(struct queue_job *job, void *data);
    /**
     * Optional, loop thread: takes @job to run it on the loop itself (work that waits on the
     * network, like a predict) and returns 1; it then calls queue_job_done() exactly once.
     * Returns 0 to have run() execute it on the pool instead.
     */
    int (*start)(struct queue_job *job, void *data);
    /** Loop thread: the outcome was written (@status MLR_OK) or could not be; release payload. */
    void (*committed)(struct queue_job *job, int status, void *data);
    /** Loop thread: current task timeout and retention, in ms (read every tick). */
    void (*limits)(void *data, int64_t *timeout_ms, int64_t *retention_ms);
    void *data;
};

struct queue_options {
    int concurrency;      /* tasks running at once; default 4 */
    int batch;            /* most tasks claimed or finished per store op; default 64 */
    int64_t tick_ms;      /* timer period for leases, timeouts, waits, retention; default 200 */
};

/**
 * Creates the dispatcher. Call queue_start() once start-up recovery is done. Returns MLR_OK;
 * *@out is written only then.
 */
int queue_open(uv_loop_t *loop, struct store *s, const struct queue_options *opts,
               const struct queue_runner *runner, struct queue **out);

/**
 * Start-up: re-runs tasks a previous process left RUNNING (synchronous, before the listener
 * opens), then starts the timer and claims. Returns how many tasks were recovered in *@recovered.
 */
int queue_start(struct queue *q, int *recovered);

/** New task rows were committed: claim them now. */
void queue_kick(struct queue *q);

/** Several nodes: some task finished somewhere; waiters look at their tasks' stored state now
 * instead of at the next tick. */
void queue_tasks_finished(struct queue *q);

/** Called with the task's final state, or NULL when @timeout_ms passed first. */
typedef void (*queue_wait_cb)(const char *task_id, const char *state, void *data);

/** Calls @cb once task @task_id reaches a final state through this queue, or after @timeout_ms. */
void queue_wait(struct queue *q, const char *task_id, int64_t timeout_ms, queue_wait_cb cb,
                void *data);

/** Loop thread: a job taken by the runner's start() has its outcome set and is done. */
void queue_job_done(struct queue_job *job);

/**
 * Loop thread: long job @job (batch ingestion) made progress. Restarts its task-timeout clock, so
 * the timeout bounds the time without progress, and returns the lease deadline (wall clock, epoch
 * ms) to store with that progress.
 */
int64_t queue_job_progress(struct queue_job *job);

/** Tasks claimed and not yet finished (for stats and tests). */
int queue_inflight(const struct queue *q);

/**
 * What the dispatcher has done since it opened, for /metrics (loop thread; the counters are
 * plain integers, the histogram's fields atomics).
 */
struct queue_stats {
    uint64_t claimed[QUEUE_TASK__TYPES];                      /* tasks claimed, by type */
    uint64_t finished[QUEUE_TASK__TYPES][QUEUE_STATE__COUNT]; /* final states recorded */
    int64_t running[QUEUE_TASK__TYPES];                       /* claimed, outcome not yet
                                                               * committed */
    int capacity;                                             /* tasks that may run at once */
    struct mlr_histogram wait_us; /* time from a task's create_time (wall clock) to its claim:
                                   * how long it waited in CREATED, µs */
};

/** The dispatcher's statistics (borrowed; valid until queue_close()). Loop thread. */
const struct queue_stats *queue_stats_get(const struct queue *q);

/** Called for each task claimed and not yet finished: its id and its document (borrowed). */
typedef void (*queue_job_visit_cb)(const char *task_id, struct json_object *doc, void *data);

/** Calls @cb for every task running now (not for those waiting for their outcome to commit). */
void queue_running_foreach(const struct queue *q, queue_job_visit_cb cb, void *data);

/** Called once a closing queue has no job, op or handle left; the queue is then freed. */
typedef void (*queue_closed_cb)(void *data);

/**
 * Stops claiming; jobs already running finish and their results are written (the store must stay
 * open until @cb runs). Pending waits are answered with NULL. Accepts NULL (then calls @cb).
 */
void queue_close(struct queue *q, queue_closed_cb cb, void *data);

#endif /* MLR_QUEUE_H */
