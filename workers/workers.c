/*
 * workers.c — the worker context: the current cluster-settings snapshot.
 *
 * Settings change rarely (a PUT) and are read on every unit of work, from any thread. A mutex
 * guards only the pointer swap and the reference increment, so a reader holds it for a few
 * nanoseconds and then uses its own reference to an immutable snapshot without any lock.
 */
#include "workers.h"

#include <pthread.h>
#include <stdlib.h>

#include <json-c/json.h>

struct workers {
    uv_loop_t *loop;                /* the loop that owns this context */
    int threads;                    /* workers.threads */
    pthread_mutex_t lock;           /* guards settings */
    struct mlr_settings *settings;  /* current snapshot; one reference owned here */
};

struct workers *workers_new(uv_loop_t *loop, struct mlr_settings *settings, int threads)
{
    struct workers *w = mlr_xcalloc(1, sizeof(*w));
    w->loop = loop;
    w->threads = threads;
    w->settings = settings; /* the context now owns this reference */
    pthread_mutex_init(&w->lock, NULL);
    return w;
}

void workers_free(struct workers *w)
{
    if (w == NULL)
        return;
    mlr_settings_unref(w->settings);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

struct mlr_settings *workers_settings_get(struct workers *w)
{
    pthread_mutex_lock(&w->lock);
    struct mlr_settings *s = mlr_settings_ref(w->settings);
    pthread_mutex_unlock(&w->lock);
    return s;
}

void workers_settings_set(struct workers *w, struct mlr_settings *settings)
{
    pthread_mutex_lock(&w->lock);
    struct mlr_settings *old = w->settings;
    w->settings = settings; /* the context now owns this reference */
    pthread_mutex_unlock(&w->lock);
    mlr_settings_unref(old);
}

/* Builds the snapshot that results from applying the change sets to the current one. */
static int build(struct workers *w, struct json_object *persistent, struct json_object *transient,
                 struct mlr_settings **out, char *err, size_t errlen)
{
    struct mlr_settings *cur = workers_settings_get(w);
    struct json_object *p = mlr_settings_layer_apply(mlr_settings_persistent(cur), persistent);
    struct json_object *t = mlr_settings_layer_apply(mlr_settings_transient(cur), transient);
    int rc = mlr_settings_new(mlr_settings_config(cur), p, t, out, err, errlen);
    json_object_put(p);
    json_object_put(t);
    mlr_settings_unref(cur);
    return rc;
}

int workers_settings_check(struct workers *w, struct json_object *persistent,
                           struct json_object *transient, char *err, size_t errlen)
{
    struct mlr_settings *next = NULL;
    int rc = build(w, persistent, transient, &next, err, errlen);
    mlr_settings_unref(next);
    return rc;
}

int workers_settings_apply(struct workers *w, struct json_object *persistent,
                           struct json_object *transient, char *err, size_t errlen)
{
    struct mlr_settings *next = NULL;
    int rc = build(w, persistent, transient, &next, err, errlen);
    if (rc == MLR_OK)
        workers_settings_set(w, next); /* the context now owns this reference */
    return rc;
}
