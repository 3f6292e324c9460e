/*
 * queue.c — the task vocabulary: name tables generated from the X-macro lists in queue.h, so the
 * enums and the strings clients parse cannot drift apart. Pure functions, O(number of names).
 */
#include "queue.h"

#include <string.h>

#include <json-c/json.h>

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

struct json_object *queue_task_doc_new(enum queue_task_type type, const char *model_id,
                                       enum queue_task_state state, const char *node_id,
                                       int is_async, int64_t now)
{
    struct json_object *doc = json_object_new_object();
    if (model_id)
        json_object_object_add(doc, "model_id", json_object_new_string(model_id));
    json_object_object_add(doc, "task_type", json_object_new_string(queue_task_type_name(type)));
    json_object_object_add(doc, "function_name", json_object_new_string("REMOTE"));
    json_object_object_add(doc, "state", json_object_new_string(queue_task_state_name(state)));
    struct json_object *nodes = json_object_new_array();
    json_object_array_add(nodes, json_object_new_string(node_id)); /* consumes the string */
    json_object_object_add(doc, "worker_node", nodes);              /* consumes nodes */
    json_object_object_add(doc, "create_time", json_object_new_int64(now));
    json_object_object_add(doc, "last_update_time", json_object_new_int64(now));
    json_object_object_add(doc, "is_async", json_object_new_boolean(is_async));
    return doc;
}
