/*
 * queue.h — durable task rows: the task vocabulary of ML Commons (reference §8.4) shared by the
 * API and the workers. Enqueue, claim, lease and finish arrive with the task-queue issue.
 *
 * Threading: the functions here are pure and thread-safe.
 */
#ifndef MLR_QUEUE_H
#define MLR_QUEUE_H

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

#endif /* MLR_QUEUE_H */
