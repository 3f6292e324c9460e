/*
 * queue.c — the task vocabulary: name tables generated from the X-macro lists in queue.h, so the
 * enums and the strings clients parse cannot drift apart. Pure functions, O(number of names).
 */
#include "queue.h"

#include <string.h>

static const char *const type_names[] = {
#define XX(name) #name,
    QUEUE_TASK_TYPE_MAP(XX)
#undef XX
};

static const char *const state_names[] = {
#define XX(name) #name,
    QUEUE_TASK_STATE_MAP(XX)
#undef XX
};

const char *queue_task_type_name(enum queue_task_type t)
{
    return (unsigned)t < QUEUE_TASK__TYPES ? type_names[t] : NULL;
}

const char *queue_task_state_name(enum queue_task_state st)
{
    return (unsigned)st < QUEUE_STATE__COUNT ? state_names[st] : NULL;
}

static int lookup(const char *const *names, int n, const char *s)
{
    for (int i = 0; i < n; i++) {
        if (strcmp(names[i], s) == 0)
            return i;
    }
    return -1;
}

int queue_task_type_parse(const char *s, enum queue_task_type *out)
{
    int i = lookup(type_names, QUEUE_TASK__TYPES, s);
    if (i < 0)
        return MLR_EINVAL;
    *out = (enum queue_task_type)i;
    return MLR_OK;
}

int queue_task_state_parse(const char *s, enum queue_task_state *out)
{
    int i = lookup(state_names, QUEUE_STATE__COUNT, s);
    if (i < 0)
        return MLR_EINVAL;
    *out = (enum queue_task_state)i;
    return MLR_OK;
}

int queue_task_state_is_final(enum queue_task_state st)
{
    switch (st) {
    case QUEUE_STATE_COMPLETED:
    case QUEUE_STATE_FAILED:
    case QUEUE_STATE_CANCELLED:
    case QUEUE_STATE_COMPLETED_WITH_ERROR:
    case QUEUE_STATE_EXPIRED:
    case QUEUE_STATE_UNREACHABLE:
        return 1;
    default:
        return 0;
    }
}
