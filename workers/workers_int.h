/*
 * workers_int.h — internals shared by the files of workers/. Nothing outside workers/ includes it.
 */
#ifndef MLR_WORKERS_INT_H
#define MLR_WORKERS_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include <openssl/crypto.h>

#include "workers.h"

#define WORKERS_BUCKETS 1024 /* deployment registry hash buckets (a power of two) */

/* Idle-time expiry of deployments and last-use bookkeeping (ttl.c); loop thread only. */
struct workers_ttl {
    uv_timer_t expire_timer;      /* armed for the earliest deadline */
    uv_timer_t flush_timer;       /* writes last-use times every second */
    struct deployment **heap;     /* min-heap by heap_key */
    int n, cap;                   /* used and allocated heap entries */
    struct deployment *dirty;     /* used since the last flush (each entry holds a ref) */
    int open;                     /* timers initialised and running */
    int closing;                  /* stopping: do not re-arm */
    int64_t last_sweep_ms;        /* wall clock, epoch ms: when the timer last fired */
    uint64_t checks;              /* heap entries that came due (incl. pushed back) */
    uint64_t expired;             /* deployments expired */
};

/* Per-model ML action counts (stats.c): a chained hash entry. */
struct workers_model_counts {
    char *model_id;                              /* heap */
    uint64_t requests[WORKERS__ACTIONS];
    uint64_t failures[WORKERS__ACTIONS];
    struct workers_model_counts *next;           /* bucket chain */
};

/* What stats.c counts (loop thread only). */
struct workers_stats {
    uint64_t requests[WORKERS__ACTIONS];         /* node totals */
    uint64_t failures[WORKERS__ACTIONS];
    struct workers_model_counts *models[WORKERS_BUCKETS];
    int nmodels;                                 /* entries in models */
    int64_t predicts_inflight;                   /* workers_predict() calls not yet answered */
};

/* Frees the per-model counts (workers_free()). */
void workers__stats_cleanup(struct workers_stats *st);

/* monitoring_request_count is now @window: every deployment's latency ring keeps only that many
 * (0 clears them, as ML Commons clears its cache). Loop thread. */
void workers__stats_window(struct workers *w, int64_t window);

/* A predict-like call counted from start to answer (stats.c): wraps @cb/@data so the answer
 * counts a failure and ends the in-flight count. Returns the data to pass with
 * workers__counted_cb. */
void *workers__counted_new(struct workers *w, const char *model_id, enum workers_action a,
                           workers_predict_cb cb, void *data);
void workers__counted_cb(struct json_object *response, const struct workers_error *e,
                         void *data);

/* Upstream calls of one deployment (predict.c counts, stats.c renders); loop thread. */
struct workers_upstream_stats {
    uint64_t calls[WORKERS_HTTP__CLASSES];       /* attempts by outcome class */
    uint64_t retries;                            /* attempts that were retries */
    struct mlr_histogram latency_us;             /* per attempt, start to answer, µs */
    struct mlr_samples predict_ms;               /* whole successful predicts, ms (profile) */
};

/* This node's part in a cluster sharing a PostgreSQL store (cluster.c); idle with SQLite. */
struct workers_cluster {
    int on;                       /* the store is shared */
    int closing;
    uv_timer_t timer;             /* heartbeat */
    int timer_open;
    int beating;                  /* a heartbeat is in flight */
    int beat_failing;             /* the last heartbeat failed (logged once) */
    int again;                    /* beat again when it returns (a notification came) */
    int64_t models_epoch;         /* counters last acted on; -1 = act at the next heartbeat */
    int64_t settings_epoch;
    int syncing;                  /* a deployment sync is in flight */
    int sync_pending;             /* its steps: the list read, then one per build */
    int primed;                   /* the first sync ran (deployments from start-up are current) */
    int settings_reading;
    uint64_t settings_gen_read;   /* workers.settings_gen when the settings read started */
    struct json_object *nodes;    /* live node ids (array), guarded by workers.lock */
    struct json_object *seen;     /* model id -> "version:connector_version" deployed here */
    struct json_object *reported; /* model ids this node reported holding (model_nodes) */
};

struct workers {
    uv_loop_t *loop;                 /* the loop that owns this context */
    int threads;                     /* workers.threads: tasks running at once */
    pthread_mutex_t lock;            /* guards settings */
    struct mlr_settings *settings;   /* current snapshot; one reference owned here */
    struct store *store;             /* set by workers_start() */
    struct queue *queue;             /* the task dispatcher */
    const unsigned char *master_key; /* MLR_MASTER_KEY_LEN bytes, owned by main() */
    char node_id[STORE_ID_MAX + 1];
    struct deployment *buckets[WORKERS_BUCKETS]; /* registry (loop thread only) */
    int ndeployed;                   /* deployments in the registry */
    struct workers_http *http;       /* upstream client */
    struct autodeploy *autodeploys;  /* deploys started by predicts, with their waiters */
    struct predict_call *backoffs;   /* calls waiting to retry (loop thread) */
    struct workers_ttl ttl;          /* TTL heap and last-use flushing */
    struct batch_job *batch_jobs;    /* running batch ingestion jobs (batch.c) */
    struct batch_poller *poller;     /* BATCH_PREDICTION status polling (batch_predict.c) */
    struct workers_stats stats;      /* ML action counts (stats.c) */
    struct workers_cluster cluster;  /* several nodes on one store (cluster.c) */
    uint64_t settings_gen;           /* local settings changes applied (loop thread) */
};

/* Cluster (cluster.c): start after the queue, stop with the workers, free with them. */
void workers__cluster_start(struct workers *w);
void workers__cluster_stop(struct workers *w);
void workers__cluster_free(struct workers *w);
/* A model deployed by another node's task (or whose task's answer came before this node's own
 * install): builds and installs it here on the pool, then calls @done on the loop. */
void workers__cluster_adopt(struct workers *w, const char *model_id, void (*done)(void *data),
                            void *data);
/* The live nodes as a new JSON array of ids (just this node without a cluster). Any thread. */
struct json_object *workers__cluster_nodes(struct workers *w);

/* Registry access for cluster.c (deploy.c): installs @d (taking its reference) with its TTL
 * counting from @last_used_ms; adds every deployed model id to @ids as a key. */
void workers__deployment_install(struct workers *w, struct deployment *d, int64_t last_used_ms);
void workers__deployments_foreach(struct workers *w, struct json_object *ids);

/* Shutdown: fails every call waiting to retry now rather than when its timer fires. */
void workers__predict_abort_backoffs(struct workers *w);

struct autodeploy;
struct batch_poller;

struct batch_job;
/* Batch ingestion (batch.c): runs BATCH_INGEST task @job on the loop (returns 1); stop_all
 * pauses every running job at shutdown (they resume at the next start). */
int workers__batch_start(struct workers *w, struct queue_job *job);
void workers__batch_stop_all(struct workers *w);

/* The queue's loop-side start hook: takes PREDICTION tasks (async predict, predict.c). */
int workers__runner_start(struct queue_job *job, void *data);

/* Runs a predict on deployment @d (predict.c). */
void workers__predict_run(struct workers *w, struct deployment *d, struct json_object *body,
                          workers_predict_cb cb, void *data);

/*
 * Completion of a connector action other than predict (predict.c): @response
 * ({"inference_results":[...]}, borrowed) or @e; @upstream_status is the HTTP status of the
 * provider's answer when the provider answered with a failure, else 0.
 */
typedef void (*workers__action_cb)(struct json_object *response, const struct workers_error *e,
                                   long upstream_status, void *data);

/* The connector's first action of type @type ("PREDICT", ...; any case), borrowed, or NULL. */
struct json_object *workers__action_find(struct json_object *connector, const char *type);

/* Marks an action object built by workers_batch_action() rather than configured: a POST
 * without a body is then sent as is. Never stored. */
#define WORKERS__SYNTHESISED "_mlrelay_synthesised"

/*
 * Runs the connector action @type (static string) of deployment @d like a predict of @body:
 * same templating, credentials, SigV4, trusted-URL and private-address checks, retries and
 * post-processing. @action, when non-NULL, is run instead of the connector's own (a synthesised
 * batch status or cancel action). Status and cancel calls skip the model's is_enabled flag and
 * rate limiter. @cb is called exactly once.
 */
void workers__action_run(struct workers *w, struct deployment *d, const char *type,
                         struct json_object *action, struct json_object *body,
                         workers__action_cb cb, void *data);

/* workers__action_run() on model @model_id, auto-deploying it first as a predict does. */
void workers__action(struct workers *w, const char *model_id, const char *type,
                     struct json_object *body, workers__action_cb cb, void *data);

struct predict_call;

/* A deployed remote model: everything a predict needs without touching the database. */
struct deployment {
    atomic_int refs;
    char model_id[STORE_ID_MAX + 1];
    struct json_object *model;        /* model document */
    struct json_object *connector;    /* connector document (credential-free) */
    struct json_object *credential;   /* decrypted: name -> plaintext; wiped on free */
    int64_t deployed_ms;              /* wall clock */
    int64_t model_version;            /* _version of the model document it was built from */
    int64_t connector_version;        /* ... and of its standalone connector (0: inline) */
    int by_task;                      /* built by a DEPLOY_MODEL task, whose own write follows */
    struct deployment *next;          /* registry chain */
    /* predict-time state, loop thread only */
    int64_t last_used_ms;             /* wall clock, epoch ms: last predict or deploy (TTL) */
    int64_t ttl_ms;                   /* model_ttl_minutes in ms; -1 = never expires */
    int64_t heap_key;                 /* wall clock, epoch ms: deadline as queued in the heap */
    int heap_idx;                     /* position in the TTL heap; -1 = not in it */
    int usage_dirty;                  /* on the TTL dirty list */
    struct deployment *dirty_next;    /* dirty list link */
    int inflight;                     /* upstream calls running (client_config.max_connection) */
    struct predict_call *waiting;     /* calls queued behind the cap, FIFO head */
    struct predict_call *waiting_tail;
    double tokens;                    /* rate limiter bucket */
    int64_t refill_ms;                /* monotonic time tokens were last refilled */
    struct workers_upstream_stats upstream; /* calls made for this deployment (loop thread) */
};

/* Sets up a new deployment's statistics (deploy.c, any thread: the deployment is not shared
 * yet) and frees them (the last unref). */
void workers__upstream_stats_init(struct workers_upstream_stats *u);
void workers__upstream_stats_cleanup(struct workers_upstream_stats *u);

/* The runner the queue calls (deploy.c); data is set to the workers at start. */
extern const struct queue_runner workers__runner;

/* Builds and installs deployments of every model stored DEPLOYED (start-up). */
int workers__redeploy(struct workers *w, int enabled);

/* TTL (ttl.c). init: start the timers (workers_start). track: a deployment entered the registry,
 * last used at @last_used_ms (wall clock). untrack: it left the registry. touch: a predict used
 * it. close: final last-use flush and timer close, then @cb (the store must still be open). */
void workers__ttl_init(struct workers *w);
void workers__ttl_track(struct workers *w, struct deployment *d, int64_t last_used_ms);
void workers__ttl_untrack(struct workers *w, struct deployment *d);
void workers__ttl_touch(struct workers *w, struct deployment *d);
void workers__ttl_close(struct workers *w, workers_stopped_cb cb, void *data);
/* Heap entries that came due and deployments expired since start (benchmarks, stats). */
void workers__ttl_stats(const struct workers *w, uint64_t *checks, uint64_t *expired);
/* Builds a deployment of @model_id that is not installed anywhere (deploy.c): for work on a
 * model that need not be deployed, such as polling a batch job. Pool thread (it reads the
 * store); the caller drops the reference. */
int workers__deployment_build(struct workers *w, const char *model_id, struct deployment **out,
                              char *err, size_t errlen);

/* A deployment of a model for one call (batch_predict.c): @d is borrowed for the callback (take a
 * reference to keep it), or NULL with the reason in @err. */
typedef void (*workers__deployment_cb)(struct deployment *d, const char *err, void *data);

/* Calls @cb with the registry's deployment of @model_id, or with one built on the pool for the
 * call when the model is not deployed here (a model is not redeployed just to be polled). */
void workers__deployment_for(struct workers *w, const char *model_id, workers__deployment_cb cb,
                             void *data);

/* The batch job poller (poller.c): started with the queue, stopped before it, freed last. */
void workers__poller_start(struct workers *w);
void workers__poller_stop(struct workers *w);
void workers__poller_free(struct workers *w);

/* Drops every deployment (shutdown). */
void workers__registry_clear(struct workers *w);

#endif /* MLR_WORKERS_INT_H */
