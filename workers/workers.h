/*
 * workers.h — the execution side of mlrelay. Today it holds the node's current cluster-settings
 * snapshot, which every thread that runs work reads; the task worker pool and the predict engine
 * (connector templates, libcurl on the loop) arrive with the queue and predict issues.
 *
 * Threading: workers_settings_get() may be called from any thread; everything else on the loop
 * thread.
 */
#ifndef MLR_WORKERS_H
#define MLR_WORKERS_H

#include <uv.h>

#include "common.h"
#include "queue.h"

struct workers;
struct json_object;

/**
 * Creates the worker context holding @settings (takes ownership of that reference). @threads is
 * the pool size (workers.threads). Returns the new object; never fails (OOM aborts).
 */
struct workers *workers_new(uv_loop_t *loop, struct mlr_settings *settings, int threads);

/** Releases @w and its settings reference. Accepts NULL. */
void workers_free(struct workers *w);

/**
 * Returns a new reference to the current settings snapshot; the caller releases it with
 * mlr_settings_unref(). Thread-safe.
 */
struct mlr_settings *workers_settings_get(struct workers *w);

/**
 * Installs @settings as the current snapshot (takes ownership of that reference). Threads that
 * still hold the previous snapshot keep using it until they release it. Thread-safe.
 */
void workers_settings_set(struct workers *w, struct mlr_settings *settings);

/**
 * Checks that applying the normalised change sets @persistent and @transient (either may be
 * NULL) to the current settings yields a valid snapshot. Returns MLR_OK, or MLR_EINVAL with the
 * reason in @err. Changes nothing. Loop thread.
 */
int workers_settings_check(struct workers *w, struct json_object *persistent,
                           struct json_object *transient, char *err, size_t errlen);

/**
 * Applies the change sets to the *current* snapshot and installs the result. Called once the
 * persistent part is committed; building from the current snapshot at that moment keeps
 * concurrent PUTs in commit order. Returns MLR_OK or MLR_EINVAL (settings unchanged). Loop thread.
 */
int workers_settings_apply(struct workers *w, struct json_object *persistent,
                           struct json_object *transient, char *err, size_t errlen);

#endif /* MLR_WORKERS_H */
