/*
 * h_stats.c — ML Commons' stats and profile APIs (reference §14), for one node: this one.
 *
 * Stats: `GET /_plugins/_ml[/{node_id}]/stats[/{stat}]`, or a body in the shape of ML Commons'
 * MLStatsInput (node_ids, target_stat_levels, cluster_level_stats, node_level_stats). The shape
 * follows ml-commons' RestMLStatsAction, MLStatsNodesResponse and MLStatsNodeResponse: the
 * cluster-level stats (ML_CLUSTER_LEVEL_STAT names, lower-cased) at the top, then "nodes" keyed
 * by node id with the node-level stats, "algorithms": {"remote": {<action>: {...}}} and
 * "models": {<model id>: {<action>: {...}}}. A `{stat}` list selects stats (node-level names go
 * to the node, everything else must be a cluster-level name, else 400 "Wrong ML cluster level
 * stat") and drops the algorithm and model levels, as ML Commons does. A node id list that does
 * not name this node (by id, name, _all, _local or *) yields no "nodes" member at all: ML
 * Commons drops empty node answers and writes "nodes" only when one is left. Index statuses are
 * IndexUtils' values: "green" for an index that exists (for us, a table with a row; the config
 * index always exists since the master key does), "non-existent" otherwise (controllers: we
 * have none). ml_jvm_heap_usage is accepted and never reported (there is no JVM);
 * ml_circuit_breaker_trigger_count is always 0 (there are no memory circuit breakers).
 *
 * Profile: `GET /_plugins/_ml/profile[/models[/{ids}]|/tasks[/{ids}]]`, ids comma-separated, or
 * a body {"node_ids","model_ids","task_ids","return_all_tasks","return_all_models"} (a body
 * replaces what the path says, as in RestMLProfileAction). Answer: {"nodes": {"<node id>":
 * {"models": {...}, "tasks": {...}}}} with empty parts left out, or {} when nothing is left.
 * The model-centric `?view=model` is not offered. Loop thread.
 */
#include "api_int.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---------------------------------- shared ---------------------------------- */

/* A new array of the non-empty comma-separated items of @s. */
static struct json_object *split_list(const char *s)
{
    struct json_object *a = json_object_new_array();
    while (s && *s) {
        size_t n = strcspn(s, ",");
        if (n > 0)
            json_object_array_add(a, json_object_new_string_len(s, (int)n)); /* consumes */
        s += n + (s[n] == ',');
    }
    return a;
}

/* Whether the node list @ids (NULL or empty = every node) names this node. */
static int names_this_node(const struct api_req *req, struct json_object *ids)
{
    size_t n = ids ? json_object_array_length(ids) : 0;
    for (size_t i = 0; i < n; i++) {
        const char *id = json_object_get_string(json_object_array_get_idx(ids, i));
        if (id && (strcmp(id, "_all") == 0 || strcmp(id, "_local") == 0 ||
                   strcmp(id, "*") == 0 || strcmp(id, req->ctx->node_id) == 0 ||
                   strcmp(id, req->ctx->node_name) == 0))
            return 1;
    }
    return n == 0;
}

/* The path parameter named {@name} in the matched route, or NULL. */
static const char *path_param(const struct api_req *req, const char *name)
{
    int i = 0;
    for (const char *p = strchr(req->route->pattern, '{'); p; p = strchr(p + 1, '{'), i++) {
        if (strncmp(p + 1, name, strlen(name)) == 0 && p[1 + strlen(name)] == '}')
            return i < req->nparams ? req->params[i] : NULL;
    }
    return NULL;
}

static struct json_object *member(struct json_object *o, const char *k)
{
    struct json_object *v = NULL;
    return o && json_object_object_get_ex(o, k, &v) ? v : NULL;
}

/* Body member @key as a new reference to an array of strings (NULL when absent). Returns -1
 * after answering 400 when it is something else. */
static int string_list(struct api_req *req, const char *key, struct json_object **out)
{
    struct json_object *v = member(req->json, key);
    int ok = v == NULL || json_object_is_type(v, json_type_array);
    for (size_t i = 0; ok && v && i < json_object_array_length(v); i++)
        ok = json_object_is_type(json_object_array_get_idx(v, i), json_type_string);
    if (!ok) {
        api_send_errorf(req, 400, "illegal_argument_exception",
                        "[%s] must be an array of strings", key);
        return -1;
    }
    *out = json_object_get(v);
    return 0;
}

/* ---------------------------------- stats ---------------------------------- */

enum level { L_CLUSTER = 1, L_NODE = 2, L_ALGORITHM = 4, L_MODEL = 8, L_ACTION = 16 };

static const char *const cluster_names[] = {
    "ml_model_index_status", "ml_connector_index_status", "ml_config_index_status",
    "ml_task_index_status",  "ml_controller_index_status", "ml_model_count",
    "ml_connector_count",
};
#define NCLUSTER (sizeof(cluster_names) / sizeof(cluster_names[0]))

static const char *const node_names[] = {
    "ml_jvm_heap_usage",       "ml_executing_task_count", "ml_request_count",
    "ml_failure_count",        "ml_deployed_model_count", "ml_circuit_breaker_trigger_count",
};
#define NNODE (sizeof(node_names) / sizeof(node_names[0]))

/* What a stats request asks for (ML Commons' MLStatsInput). Lives in the request's pool. */
struct stats_query {
    struct api_req *req;
    unsigned levels;              /* enum level bits */
    unsigned cluster;             /* bit i: cluster_names[i] wanted; 0 = all */
    unsigned node;                /* bit i: node_names[i] wanted; 0 = all */
    struct json_object *node_ids; /* owned; NULL = every node */
};

static int name_index(const char *const *names, size_t n, const char *s, size_t len)
{
    for (size_t i = 0; i < n; i++) {
        if (strlen(names[i]) == len && strncasecmp(names[i], s, len) == 0)
            return (int)i;
    }
    return -1;
}

/* Adds the stat names of @list (array) to the query; node-level names go to the node unless
 * @only is L_CLUSTER. Returns -1 for a name that is neither. */
static int add_stats(struct stats_query *q, struct json_object *list, unsigned only)
{
    for (size_t i = 0; list && i < json_object_array_length(list); i++) {
        struct json_object *v = json_object_array_get_idx(list, i);
        const char *s = json_object_get_string(v);
        size_t len = s ? strlen(s) : 0;
        int k = only == L_CLUSTER ? -1 : name_index(node_names, NNODE, s, len);
        int c = k >= 0 || only == L_NODE ? -1 : name_index(cluster_names, NCLUSTER, s, len);
        if (k >= 0)
            q->node |= 1u << k;
        else if (c >= 0)
            q->cluster |= 1u << c;
        else
            return -1;
    }
    return 0;
}

static int parse_levels(struct stats_query *q, struct json_object *list)
{
    static const char *const names[] = {"cluster", "node", "algorithm", "model", "action"};
    for (size_t i = 0; list && i < json_object_array_length(list); i++) {
        const char *s = json_object_get_string(json_object_array_get_idx(list, i));
        int k = name_index(names, 5, s, s ? strlen(s) : 0);
        if (k < 0)
            return -1;
        q->levels |= 1u << k;
    }
    return 0;
}

/* Fills @q from the body (MLStatsInput). Returns 0, or -1 after answering 400. @q lives in the
 * request's pool, so nothing may touch it once an answer went out. */
static int stats_body_parse(struct api_req *req, struct stats_query *q)
{
    struct json_object *nodes = NULL, *levels = NULL, *cluster = NULL, *node = NULL;
    int rc = string_list(req, "node_ids", &nodes);
    if (rc == 0)
        rc = string_list(req, "target_stat_levels", &levels);
    if (rc == 0)
        rc = string_list(req, "cluster_level_stats", &cluster);
    if (rc == 0)
        rc = string_list(req, "node_level_stats", &node);
    int bad = rc == 0 && (parse_levels(q, levels) != 0 || add_stats(q, cluster, L_CLUSTER) != 0 ||
                          add_stats(q, node, L_NODE) != 0);
    json_object_put(levels);
    json_object_put(cluster);
    json_object_put(node);
    if (rc != 0 || bad) {
        json_object_put(nodes);
        if (bad)
            api_send_error(req, 400, "illegal_argument_exception", "Wrong ML stat or stat level");
        return -1;
    }
    q->node_ids = nodes;
    return 0;
}

/* Fills @q from the body or the path. Returns 0, or -1 after answering 400. */
static int stats_query_parse(struct api_req *req, struct stats_query *q)
{
    if (req->json)
        return stats_body_parse(req, q);
    const char *nodes = path_param(req, "node_id"), *stat = path_param(req, "stat");
    struct json_object *stats = stat ? split_list(stat) : NULL;
    q->node_ids = nodes ? split_list(nodes) : NULL;
    int rc = add_stats(q, stats, 0);
    /* Without {stat} every level is wanted; with it only the levels its names belong to. */
    q->levels = !stats ? L_CLUSTER | L_NODE | L_ALGORITHM | L_MODEL | L_ACTION
                       : (q->cluster ? L_CLUSTER : 0) | (q->node ? L_NODE : 0);
    json_object_put(stats);
    if (rc != 0) {
        json_object_put(q->node_ids);
        api_send_error(req, 400, "illegal_argument_exception", "Wrong ML cluster level stat");
    }
    return rc;
}

static void add_cluster(struct json_object *o, const struct stats_query *q,
                        const struct store_doc_counts *c)
{
    const char *status[] = {c->docs[STORE_MODEL] ? "green" : "non-existent",
                            c->docs[STORE_CONNECTOR] ? "green" : "non-existent", "green",
                            c->docs[STORE_TASK] ? "green" : "non-existent", "non-existent"};
    for (size_t i = 0; i < NCLUSTER; i++) {
        if (q->cluster && !(q->cluster & (1u << i)))
            continue;
        json_object_object_add(o, cluster_names[i],
                               i < 5 ? json_object_new_string(status[i])
                               : i == 5 ? json_object_new_int64(c->docs[STORE_MODEL])
                                        : json_object_new_int64(c->docs[STORE_CONNECTOR]));
    }
}

/* The node's entry, or NULL when it would be empty. */
static struct json_object *node_entry(const struct stats_query *q)
{
    struct workers *w = q->req->ctx->workers;
    struct workers_node_stats ns;
    workers_stats_node(w, &ns);
    int64_t values[NNODE] = {-1, ns.executing, (int64_t)ns.requests, (int64_t)ns.failures,
                             ns.deployed, 0};
    struct json_object *o = json_object_new_object();
    for (size_t i = 0; (q->levels & L_NODE) && i < NNODE; i++) {
        if (values[i] >= 0 && (!q->node || (q->node & (1u << i))))
            json_object_object_add(o, node_names[i], json_object_new_int64(values[i]));
    }
    struct json_object *algos = q->levels & (L_ALGORITHM | L_ACTION) ? workers_stats_algorithms(w)
                                                                     : NULL;
    struct json_object *models = q->levels & (L_MODEL | L_ACTION) ? workers_stats_models(w) : NULL;
    if (algos)
        json_object_object_add(o, "algorithms", algos); /* consumes algos */
    if (models)
        json_object_object_add(o, "models", models); /* consumes models */
    if (json_object_object_length(o) > 0)
        return o;
    json_object_put(o);
    return NULL;
}

static void stats_answer(struct stats_query *q, const struct store_doc_counts *counts)
{
    struct json_object *o = json_object_new_object();
    if ((q->levels & L_CLUSTER) && counts)
        add_cluster(o, q, counts);
    struct json_object *entry = q->levels & ~(unsigned)L_CLUSTER && names_this_node(q->req, q->node_ids)
                                    ? node_entry(q) : NULL;
    if (entry) {
        struct json_object *nodes = json_object_new_object();
        json_object_object_add(nodes, q->req->ctx->node_id, entry); /* consumes entry */
        json_object_object_add(o, "nodes", nodes);                  /* consumes nodes */
    }
    json_object_put(q->node_ids);
    api_send_json(q->req, 200, o);
}

static void on_counts(int status, const struct store_doc_counts *c, void *data)
{
    struct stats_query *q = data;
    if (status != MLR_OK) {
        json_object_put(q->node_ids);
        api_send_errorf(q->req, 500, "exception", "Failed to get ML model count: %s",
                        mlr_strerror(status));
        return;
    }
    stats_answer(q, c);
}

void api_h_stats(struct api_req *req)
{
    struct stats_query *q = mlr_pool_alloc(&req->pool, sizeof(*q));
    memset(q, 0, sizeof(*q));
    q->req = req;
    if (stats_query_parse(req, q) != 0)
        return;
    if (!(q->levels & L_CLUSTER)) {
        stats_answer(q, NULL);
        return;
    }
    int rc = store_doc_counts_get(req->ctx->store, on_counts, q);
    if (rc != MLR_OK)
        on_counts(rc, NULL, q);
}

/* ---------------------------------- profile ---------------------------------- */

/* What a profile request asks for (ML Commons' MLProfileInput). */
struct profile_query {
    struct json_object *node_ids;  /* NULL = every node */
    struct json_object *model_ids; /* NULL or empty = none unless all_models */
    struct json_object *task_ids;
    int all_models;
    int all_tasks;
};

/* Fills @q from the body or the path. Returns 0, or -1 after answering 400. */
static int profile_query_parse(struct api_req *req, struct profile_query *q)
{
    struct json_object *body = req->json;
    if (body) {
        int rc = string_list(req, "node_ids", &q->node_ids);
        if (rc == 0)
            rc = string_list(req, "model_ids", &q->model_ids);
        if (rc == 0)
            rc = string_list(req, "task_ids", &q->task_ids);
        q->all_models = json_object_get_boolean(member(body, "return_all_models"));
        q->all_tasks = json_object_get_boolean(member(body, "return_all_tasks"));
        return rc;
    }
    const char *pattern = req->route->pattern, *models = path_param(req, "model_id"),
               *tasks = path_param(req, "task_id");
    int on_models = strstr(pattern, "/models") != NULL, on_tasks = strstr(pattern, "/tasks") != NULL;
    q->model_ids = models ? split_list(models) : NULL;
    q->task_ids = tasks ? split_list(tasks) : NULL;
    q->all_models = (on_models && !models) || (!on_models && !on_tasks);
    q->all_tasks = (on_tasks && !tasks) || (!on_models && !on_tasks);
    return 0;
}

/* Whether to list models (or tasks): all of them, or those of a non-empty id list. */
static int wants(struct json_object *ids, int all)
{
    return all || (ids && json_object_array_length(ids) > 0);
}

static void put_if_any(struct json_object *o, const char *key, struct json_object *v)
{
    if (json_object_object_length(v) > 0)
        json_object_object_add(o, key, v); /* consumes v */
    else
        json_object_put(v);
}

void api_h_profile(struct api_req *req)
{
    struct profile_query q = {0};
    if (profile_query_parse(req, &q) != 0) {
        json_object_put(q.node_ids);
        json_object_put(q.model_ids);
        return;
    }
    struct workers *w = req->ctx->workers;
    struct json_object *entry = json_object_new_object(), *o = json_object_new_object();
    if (names_this_node(req, q.node_ids) && wants(q.model_ids, q.all_models))
        put_if_any(entry, "models", workers_profile_models(w, q.all_models ? NULL : q.model_ids));
    if (names_this_node(req, q.node_ids) && wants(q.task_ids, q.all_tasks))
        put_if_any(entry, "tasks", workers_profile_tasks(w, q.all_tasks ? NULL : q.task_ids));
    if (json_object_object_length(entry) > 0) {
        struct json_object *nodes = json_object_new_object();
        json_object_object_add(nodes, req->ctx->node_id, entry); /* consumes entry */
        json_object_object_add(o, "nodes", nodes);              /* consumes nodes */
    } else {
        json_object_put(entry);
    }
    json_object_put(q.node_ids);
    json_object_put(q.model_ids);
    json_object_put(q.task_ids);
    api_send_json(req, 200, o);
}
