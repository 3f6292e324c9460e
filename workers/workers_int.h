/*
 * workers_int.h — internals shared by the files of workers/. Nothing outside workers/ includes it.
 */
#ifndef MLR_WORKERS_INT_H
#define MLR_WORKERS_INT_H

#include <pthread.h>

#include <openssl/crypto.h>

#include "workers.h"

#define WORKERS_BUCKETS 1024 /* deployment registry hash buckets (a power of two) */

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
};

/* The runner the queue calls (deploy.c); data is set to the workers at start. */
extern const struct queue_runner workers__runner;

/* Builds and installs deployments of every model stored DEPLOYED (start-up). */
int workers__redeploy(struct workers *w, int enabled);

/* Drops every deployment (shutdown). */
void workers__registry_clear(struct workers *w);

#endif /* MLR_WORKERS_INT_H */
