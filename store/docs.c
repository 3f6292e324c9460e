/*
 * docs.c — documents: model groups, connectors, models and tasks.
 *
 * A row holds the JSON document clients see, side data beside it that is never shown (the
 * encrypted credential of connectors and inline connectors; a task's input, such as an async
 * predict's request body), and columns derived from the document for indexed filtering
 * and sorting. The document is the source of truth; the columns are recomputed on every write
 * from the table below, so they can never disagree with it.
 *
 * Every write is one store__op on the writer thread, so check-then-write sequences (a name must
 * be unique, a connector must not be in use, a model group's version counter is bumped while the
 * model is inserted) are atomic without any extra locking: there is one writer. With PostgreSQL
 * several nodes each have a writer; there a document read to be written back is locked
 * (store__doc_load() reads FOR UPDATE inside the writer's transaction), a group name is looked
 * up under a lock on that name (group_name_lock()), and any other clash, which only the unique
 * keys catch, fails the op with MLR_EEXIST. Reads run on the read pool and parse the document
 * there, off the loop thread.
 *
 * _version starts at 1 and grows by one per update (and on delete, as in OpenSearch); _seq_no
 * comes from one counter in the meta table, bumped inside the same transaction as the write.
 */
#include "store_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

/* A column derived from a top-level document field; owner columns read owner.name. */
struct column {
    const char *field;  /* document key */
    int integer;        /* bind as int64 (else text) */
};

struct kind_desc {
    const char *table;
    const char *index;              /* OpenSearch index name */
    const struct column *cols;      /* derived columns, in the order of the SQL below */
    int ncols;
    const char *insert_sql;         /* id, version, seq_no, doc, credential, cols... */
    const char *update_sql;         /* seq_no, doc, credential, cols..., id */
    const char *select_sql;         /* doc, version, seq_no, credential WHERE id = ? */
    const char *lock_sql;           /* PostgreSQL: select_sql ... FOR UPDATE */
    const char *delete_sql;         /* WHERE id = ? RETURNING version */
    const char *any_sql;            /* does the table have any row */
};

static const struct column group_cols[] = {
    {"name", 0}, {"latest_version", 1}, {"access", 0}, {"owner", 0},
    {"created_time", 1}, {"last_updated_time", 1},
};
static const struct column connector_cols[] = {
    {"name", 0}, {"owner", 0}, {"created_time", 1}, {"last_updated_time", 1},
};
static const struct column model_cols[] = {
    {"name", 0}, {"model_group_id", 0}, {"connector_id", 0}, {"model_state", 0},
    {"created_time", 1}, {"last_updated_time", 1},
};
static const struct column task_cols[] = {
    {"task_type", 0}, {"state", 0}, {"model_id", 0}, {"create_time", 1}, {"last_update_time", 1},
};

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const struct kind_desc kinds[STORE__KINDS] = {
    [STORE_MODEL_GROUP] = {
        "model_groups", ".plugins-ml-model-group", group_cols, N(group_cols),
        "INSERT INTO model_groups(id, version, seq_no, doc, name, latest_version, access, owner, "
        "created_time, last_updated_time) VALUES(?1, ?2, ?3, ?4, ?6, ?7, ?8, ?9, ?10, ?11)",
        "UPDATE model_groups SET version = version + 1, seq_no = ?1, doc = ?2, name = ?4, "
        "latest_version = ?5, access = ?6, owner = ?7, created_time = ?8, last_updated_time = ?9 "
        "WHERE id = ?10 RETURNING version",
        "SELECT doc, version, seq_no, NULL FROM model_groups WHERE id = ?",
        "SELECT doc, version, seq_no, NULL FROM model_groups WHERE id = ? FOR UPDATE",
        "DELETE FROM model_groups WHERE id = ? RETURNING version",
        "SELECT EXISTS(SELECT 1 FROM model_groups)",
    },
    [STORE_CONNECTOR] = {
        "connectors", ".plugins-ml-connector", connector_cols, N(connector_cols),
        "INSERT INTO connectors(id, version, seq_no, doc, credential, name, owner, created_time, "
        "last_updated_time) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        "UPDATE connectors SET version = version + 1, seq_no = ?1, doc = ?2, credential = ?3, "
        "name = ?4, owner = ?5, created_time = ?6, last_updated_time = ?7 WHERE id = ?8 "
        "RETURNING version",
        "SELECT doc, version, seq_no, credential FROM connectors WHERE id = ?",
        "SELECT doc, version, seq_no, credential FROM connectors WHERE id = ? FOR UPDATE",
        "DELETE FROM connectors WHERE id = ? RETURNING version",
        "SELECT EXISTS(SELECT 1 FROM connectors)",
    },
    [STORE_MODEL] = {
        "models", ".plugins-ml-model", model_cols, N(model_cols),
        "INSERT INTO models(id, version, seq_no, doc, credential, name, model_group_id, "
        "connector_id, model_state, created_time, last_updated_time) "
        "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        "UPDATE models SET version = version + 1, seq_no = ?1, doc = ?2, credential = ?3, "
        "name = ?4, model_group_id = ?5, connector_id = ?6, model_state = ?7, created_time = ?8, "
        "last_updated_time = ?9 WHERE id = ?10 RETURNING version",
        "SELECT doc, version, seq_no, credential FROM models WHERE id = ?",
        "SELECT doc, version, seq_no, credential FROM models WHERE id = ? FOR UPDATE",
        "DELETE FROM models WHERE id = ? RETURNING version",
        "SELECT EXISTS(SELECT 1 FROM models)",
    },
    [STORE_TASK] = {
        "tasks", ".plugins-ml-task", task_cols, N(task_cols),
        "INSERT INTO tasks(id, version, seq_no, doc, input, task_type, state, model_id, "
        "create_time, last_update_time) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        "UPDATE tasks SET version = version + 1, seq_no = ?1, doc = ?2, task_type = ?4, "
        "state = ?5, model_id = ?6, create_time = ?7, last_update_time = ?8 WHERE id = ?9 "
        "RETURNING version",
        "SELECT doc, version, seq_no, input FROM tasks WHERE id = ?",
        "SELECT doc, version, seq_no, input FROM tasks WHERE id = ? FOR UPDATE",
        "DELETE FROM tasks WHERE id = ? RETURNING version",
        "SELECT EXISTS(SELECT 1 FROM tasks)",
    },
};

const char *store_kind_index(enum store_kind kind)
{
    return kinds[kind].index;
}

const char *store__kind_table(enum store_kind kind)
{
    return kinds[kind].table;
}

/* ---------------------------------- helpers (writer thread) ---------------------------------- */

/* Hands out the next _seq_no. */
static int next_seq(struct store__conn *c, int64_t *out)
{
    return store__seq_next(c, out);
}

int store__seq_next(struct store__conn *c, int64_t *out)
{
    if (c->seq_batched) {
        *out = ++c->seq;
        c->seq_dirty = 1;
        return MLR_OK;
    }
    if (c->pg && c->seq_pool_next < c->seq_pool_n) {
        *out = c->seq_pool[c->seq_pool_next++];
        return MLR_OK;
    }
    /* PostgreSQL: numbers come from the shared sequence, a block per round trip (a register
     * writes three documents; one nextval round trip each was a third of its statements). A
     * block left unused when the node stops is a gap, which _seq_no allows. */
    struct store__stmt *st = NULL;
    int rc = store__stmt(c, STORE_SQL(c, "UPDATE meta SET value = CAST(value AS INTEGER) + 1 "
                                         "WHERE key = 'seq_no' RETURNING CAST(value AS INTEGER)",
                                      "SELECT nextval('mlr_seq_no') FROM generate_series(1, 64)"),
                         &st);
    if (rc != MLR_OK)
        return rc;
    int step;
    c->seq_pool_n = c->seq_pool_next = 0;
    while ((step = store__step(st)) == SQLITE_ROW && c->seq_pool_n < STORE_SEQ_POOL)
        c->seq_pool[c->seq_pool_n++] = store__col_int(st, 0);
    store__reset(st);
    if (c->seq_pool_n == 0)
        return step == SQLITE_DONE || step == SQLITE_ROW ? MLR_ECORRUPT : store__err(step);
    *out = c->seq_pool[c->seq_pool_next++];
    return rc;
}

/* Binds derived column values from @doc at parameters first.. in table order. */
static void bind_columns(struct store__stmt *st, int first, const struct kind_desc *k,
                         struct json_object *doc)
{
    for (int i = 0; i < k->ncols; i++) {
        struct json_object *v = NULL;
        if (!json_object_object_get_ex(doc, k->cols[i].field, &v) || v == NULL) {
            store__bind_null(st, first + i);
            continue;
        }
        if (json_object_is_type(v, json_type_object)) /* owner: {"name": ...} */
            json_object_object_get_ex(v, "name", &v);
        if (v == NULL)
            store__bind_null(st, first + i);
        else if (k->cols[i].integer)
            store__bind_int(st, first + i, json_object_get_int64(v));
        else
            store__bind_text(st, first + i, json_object_get_string(v));
    }
}

static const char *doc_text(struct json_object *doc)
{
    return json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PLAIN |
                                                   JSON_C_TO_STRING_NOSLASHESCAPE);
}

/* Runs a statement that returns one integer (or none: *out untouched, returns MLR_ENOTFOUND). */
int store__step_int(struct store__stmt *st, int64_t *out)
{
    int rc = store__step(st);
    int ret = rc == SQLITE_ROW ? MLR_OK : rc == SQLITE_DONE ? MLR_ENOTFOUND : store__err(rc);
    if (rc == SQLITE_ROW && out)
        *out = store__col_int(st, 0);
    store__reset(st);
    return ret;
}

/*
 * PostgreSQL, writer: holds a lock on group name @name until the transaction ends. The writers
 * that look a name up are about to take it (create or rename a group) or to use the group found;
 * with several nodes, a second node asking for the same name waits for the first to commit and
 * then finds its group, instead of failing on the unique key. Any int4 works as the lock class
 * as long as every node uses the same one.
 */
static int group_name_lock(struct store__conn *c, const char *name)
{
    struct store__stmt *st = NULL;
    int rc = store__stmt(c, "SELECT pg_advisory_xact_lock(1835823719, hashtext(?))", &st);
    if (rc != MLR_OK)
        return rc;
    store__bind_text(st, 1, name);
    rc = store__err(store__step(st));
    store__reset(st);
    return rc;
}

/* Finds the id of the model group named @name; MLR_ENOTFOUND when none. */
static int group_by_name(struct store__conn *c, const char *name, char *id, size_t idlen)
{
    struct store__stmt *st = NULL;
    int rc = c->pg != NULL && store__in_tx(c) ? group_name_lock(c, name) : MLR_OK;
    if (rc == MLR_OK)
        rc = store__stmt(c, "SELECT id FROM model_groups WHERE name = ?", &st);
    if (rc != MLR_OK)
        return rc;
    store__bind_text(st, 1, name);
    rc = store__step(st);
    if (rc == SQLITE_ROW)
        snprintf(id, idlen, "%s", store__col_text(st, 0));
    int ret = rc == SQLITE_ROW ? MLR_OK : rc == SQLITE_DONE ? MLR_ENOTFOUND : store__err(rc);
    store__reset(st);
    return ret;
}

/* ---------------------------------- write ops ---------------------------------- */

struct doc_op {
    struct store__op op;
    enum store_kind kind;
    char id[STORE_ID_MAX + 1];
    struct json_object *doc;        /* insert: the document (owned copy) */
    char *credential;               /* insert: encrypted map (owned copy) or NULL */
    store_patch_fn patch;           /* update */
    void *patch_arg;
    store_write_cb cb;
    void *data;
    /* results, written on the writer thread */
    char rid[STORE_ID_MAX + 1];     /* id reported back (the holder on a name clash) */
    int64_t version;
    int64_t seq_no;
    int count;
    struct mlr_buf detail;
};

static void doc_op_done(struct store__op *op)
{
    struct doc_op *d = container_of(op, struct doc_op, op);
    struct store_write_result r = {
        .status = op->status,
        .id = d->rid[0] ? d->rid : d->id,
        .version = d->version,
        .seq_no = d->seq_no,
        .detail = d->detail.data ? d->detail.data : "",
        .count = d->count,
    };
    d->cb(&r, d->data);
    json_object_put(d->doc);
    free(d->credential);
    mlr_buf_cleanup(&d->detail);
    free(d);
}

static struct doc_op *doc_op_new(enum store_kind kind, const char *id, store_write_cb cb,
                                 void *data)
{
    struct doc_op *d = mlr_xcalloc(1, sizeof(*d));
    d->op.done = doc_op_done;
    d->kind = kind;
    snprintf(d->id, sizeof(d->id), "%s", id);
    d->cb = cb;
    d->data = data;
    mlr_buf_init(&d->detail, 4096);
    return d;
}

/* Inserts @doc under @id with @credential. Shared by store_doc_insert and model registration. */
int store__doc_insert(struct store__conn *c, enum store_kind kind, const char *id,
                      struct json_object *doc, const char *credential, int64_t *seq_out)
{
    const struct kind_desc *k = &kinds[kind];
    struct store__stmt *st = NULL;
    int64_t seq = 0;
    int rc = next_seq(c, &seq);
    if (rc == MLR_OK)
        rc = store__stmt(c, k->insert_sql, &st);
    if (rc != MLR_OK)
        return rc;
    store__bind_text(st, 1, id);
    store__bind_int(st, 2, 1);
    store__bind_int(st, 3, seq);
    store__bind_text(st, 4, doc_text(doc));
    if (credential)
        store__bind_text(st, 5, credential);
    bind_columns(st, 6, k, doc);
    int step = store__step(st);
    store__reset(st);
    if (step != SQLITE_DONE)
        return store__err(step);
    if (seq_out)
        *seq_out = seq;
    return MLR_OK;
}

int store__doc_exists(struct store__conn *c, enum store_kind kind, const char *id)
{
    /* Only the primary key is looked at: reading the document blob here cost the register path
     * two needless row reads. */
    static const char *const sql[STORE__KINDS] = {
        [STORE_MODEL_GROUP] = "SELECT 1 FROM model_groups WHERE id = ?",
        [STORE_CONNECTOR] = "SELECT 1 FROM connectors WHERE id = ?",
        [STORE_MODEL] = "SELECT 1 FROM models WHERE id = ?",
        [STORE_TASK] = "SELECT 1 FROM tasks WHERE id = ?",
    };
    struct store__stmt *st = NULL;
    if (store__stmt(c, sql[kind], &st) != MLR_OK)
        return 0;
    store__bind_text(st, 1, id);
    int found = store__step(st) == SQLITE_ROW;
    store__reset(st);
    return found;
}

static int insert_run(struct store__conn *c, struct store__op *op)
{
    struct doc_op *d = container_of(op, struct doc_op, op);
    if (store__doc_exists(c, d->kind, d->id))
        return MLR_EEXIST;
    if (d->kind == STORE_MODEL_GROUP) {
        struct json_object *name = json_object_object_get(d->doc, "name");
        if (name && group_by_name(c, json_object_get_string(name), d->rid, sizeof(d->rid)) ==
                        MLR_OK)
            return MLR_ECONFLICT;
    }
    d->version = 1;
    return store__doc_insert(c, d->kind, d->id, d->doc, d->credential, &d->seq_no);
}

int store_doc_insert(struct store *s, enum store_kind kind, const char *id, struct json_object *doc,
                     const char *credential, store_write_cb cb, void *data)
{
    struct doc_op *d = doc_op_new(kind, id, cb, data);
    d->op.run = insert_run;
    json_object_deep_copy(doc, &d->doc, NULL);
    d->credential = credential ? mlr_xstrdup(credential) : NULL;
    int rc = store__submit(s, &d->op);
    if (rc != MLR_OK) {
        json_object_put(d->doc);
        free(d->credential);
        mlr_buf_cleanup(&d->detail);
        free(d);
    }
    return rc;
}

/*
 * Reads the current document and credential of @id. Inside a transaction on PostgreSQL (the
 * writer: every op that reads a document to write it back) the row is locked FOR UPDATE until
 * commit, so a writer on another node that read the same row waits and then sees this one's
 * write instead of overwriting it with a stale copy. SQLite needs no lock: its writer holds the
 * database's only write lock from BEGIN IMMEDIATE. Readers run outside transactions and lock
 * nothing.
 */
int store__doc_load(struct store__conn *c, enum store_kind kind, const char *id,
                    struct json_object **doc, char **credential, struct store_doc *meta)
{
    struct store__stmt *st = NULL;
    int lock = c->pg != NULL && store__in_tx(c);
    int rc = store__stmt(c, lock ? kinds[kind].lock_sql : kinds[kind].select_sql, &st);
    if (rc != MLR_OK)
        return rc;
    store__bind_text(st, 1, id);
    int step = store__step(st);
    if (step == SQLITE_ROW) {
        *doc = json_tokener_parse(store__col_text(st, 0));
        const char *cred = store__col_text(st, 3);
        *credential = cred ? mlr_xstrdup((const char *)cred) : NULL;
        if (meta) {
            meta->version = store__col_int(st, 1);
            meta->seq_no = store__col_int(st, 2);
        }
        rc = *doc ? MLR_OK : MLR_ECORRUPT;
    } else {
        rc = step == SQLITE_DONE ? MLR_ENOTFOUND : store__err(step);
    }
    store__reset(st);
    return rc;
}

int store__doc_write(struct store__conn *c, enum store_kind kind, const char *id,
                     struct json_object *doc, const char *credential, int64_t *version,
                     int64_t *seq_no)
{
    const struct kind_desc *k = &kinds[kind];
    struct store__stmt *st = NULL;
    int64_t seq = 0, ver = 0;
    int rc = next_seq(c, &seq);
    if (rc == MLR_OK)
        rc = store__stmt(c, k->update_sql, &st);
    if (rc != MLR_OK)
        return rc;
    /* Every update statement numbers its parameters alike: ?1 seq_no, ?2 doc, ?3 credential
     * (unused by tables without one), ?4.. the derived columns, then the id. */
    store__bind_int(st, 1, seq);
    store__bind_text(st, 2, doc_text(doc));
    if (credential)
        store__bind_text(st, 3, credential);
    bind_columns(st, 4, k, doc);
    store__bind_text(st, 4 + k->ncols, id);
    rc = store__step_int(st, &ver);
    if (rc == MLR_OK && version)
        *version = ver;
    if (rc == MLR_OK && seq_no)
        *seq_no = seq;
    return rc;
}

static int update_run(struct store__conn *c, struct store__op *op)
{
    struct doc_op *d = container_of(op, struct doc_op, op);
    struct json_object *doc = NULL;
    char *cred = NULL;
    char err[512] = "";
    int rc = store__doc_load(c, d->kind, d->id, &doc, &cred, NULL);
    if (rc == MLR_OK) {
        rc = d->patch(doc, &cred, d->patch_arg, err, sizeof(err));
        if (rc != MLR_OK)
            mlr_buf_puts(&d->detail, err);
    }
    if (rc == MLR_OK && d->kind == STORE_MODEL) {
        /* A model may only point at a connector that exists. */
        struct json_object *cid = json_object_object_get(doc, "connector_id");
        if (cid && !store__doc_exists(c, STORE_CONNECTOR, json_object_get_string(cid))) {
            mlr_buf_printf(&d->detail, "connector:%s", json_object_get_string(cid));
            rc = MLR_ENOTFOUND;
        }
    }
    if (rc == MLR_OK && d->kind == STORE_MODEL_GROUP) {
        struct json_object *name = json_object_object_get(doc, "name");
        if (name && group_by_name(c, json_object_get_string(name), d->rid, sizeof(d->rid)) ==
                        MLR_OK &&
            strcmp(d->rid, d->id) != 0)
            rc = MLR_ECONFLICT;
    }
    if (rc == MLR_OK)
        rc = store__doc_write(c, d->kind, d->id, doc, cred, &d->version, &d->seq_no);
    json_object_put(doc);
    free(cred);
    return rc;
}

int store_doc_update(struct store *s, enum store_kind kind, const char *id, store_patch_fn patch,
                     void *arg, store_write_cb cb, void *data)
{
    struct doc_op *d = doc_op_new(kind, id, cb, data);
    d->op.run = update_run;
    d->patch = patch;
    d->patch_arg = arg;
    int rc = store__submit(s, &d->op);
    if (rc != MLR_OK) {
        mlr_buf_cleanup(&d->detail);
        free(d);
    }
    return rc;
}

/* Collects the ids of models using connector @id into "[a, b]"; returns how many. */
static int models_using_connector(struct store__conn *c, const char *id, struct mlr_buf *out)
{
    struct store__stmt *st = NULL;
    if (store__stmt(c, "SELECT id FROM models WHERE connector_id = ? ORDER BY id", &st) != MLR_OK)
        return -1;
    store__bind_text(st, 1, id);
    int n = 0;
    mlr_buf_puts(out, "[");
    while (store__step(st) == SQLITE_ROW) {
        if (n++ > 0)
            mlr_buf_puts(out, ", ");
        mlr_buf_puts(out, store__col_text(st, 0));
    }
    mlr_buf_puts(out, "]");
    store__reset(st);
    return n;
}

/* The per-kind refusal rules of a delete, checked inside the deleting transaction. */
static int delete_check(struct store__conn *c, struct doc_op *d)
{
    struct store__stmt *st = NULL;
    int64_t n = 0;
    int rc = MLR_OK;
    switch (d->kind) {
    case STORE_MODEL_GROUP:
        rc = store__stmt(c, "SELECT count(*) FROM models WHERE model_group_id = ?", &st);
        if (rc == MLR_OK) {
            store__bind_text(st, 1, d->id);
            rc = store__step_int(st, &n);
        }
        return rc == MLR_OK && n > 0 ? MLR_ECONFLICT : rc;
    case STORE_CONNECTOR:
        d->count = models_using_connector(c, d->id, &d->detail);
        return d->count > 0 ? MLR_ECONFLICT : d->count < 0 ? MLR_EIO : MLR_OK;
    case STORE_MODEL:
        rc = store__stmt(c, "SELECT 1 FROM models WHERE id = ? AND model_state IN "
                            "('DEPLOYED', 'DEPLOYING', 'PARTIALLY_DEPLOYED')", &st);
        break;
    case STORE_TASK:
        rc = store__stmt(c, "SELECT 1 FROM tasks WHERE id = ? AND state = 'RUNNING'", &st);
        break;
    default:
        return MLR_EINVAL;
    }
    if (rc != MLR_OK)
        return rc;
    store__bind_text(st, 1, d->id);
    rc = store__step_int(st, NULL);
    return rc == MLR_OK ? MLR_EBUSY : rc == MLR_ENOTFOUND ? MLR_OK : rc;
}

static int delete_run(struct store__conn *c, struct store__op *op)
{
    struct doc_op *d = container_of(op, struct doc_op, op);
    if (!store__doc_exists(c, d->kind, d->id))
        return MLR_ENOTFOUND;
    int rc = delete_check(c, d);
    struct store__stmt *st = NULL;
    if (rc == MLR_OK)
        rc = next_seq(c, &d->seq_no);
    if (rc == MLR_OK)
        rc = store__stmt(c, kinds[d->kind].delete_sql, &st);
    if (rc != MLR_OK)
        return rc;
    store__bind_text(st, 1, d->id);
    rc = store__step_int(st, &d->version);
    d->version++; /* a delete is a new version of the document, as in OpenSearch */
    return rc;
}

int store_doc_delete(struct store *s, enum store_kind kind, const char *id, store_write_cb cb,
                     void *data)
{
    struct doc_op *d = doc_op_new(kind, id, cb, data);
    d->op.run = delete_run;
    int rc = store__submit(s, &d->op);
    if (rc != MLR_OK) {
        mlr_buf_cleanup(&d->detail);
        free(d);
    }
    return rc;
}

/* ---------------------------------- model registration ---------------------------------- */

struct register_op {
    struct doc_op d;                 /* d.id = model id, d.doc = model document */
    char *group_id;                  /* requested group, or NULL */
    char *group_new_id;              /* id for an auto-created group */
    struct json_object *group_doc;
    char *connector_id;
    char *task_id;
    struct json_object *task_doc;
    char used_group[STORE_ID_MAX + 1];
    char model_version[24];
};

/*
 * Bumps group @id's version counter in one statement, no JSON round trip through C: SET
 * expressions see the old row, so latest_version + 1 is the new version in both the column and
 * the document.
 */
static int group_bump_sqlite(struct store__conn *c, const char *id, int64_t now, int64_t *latest)
{
    struct store__stmt *st = NULL;
    int64_t seq = 0;
    int rc = next_seq(c, &seq);
    if (rc == MLR_OK)
        rc = store__stmt(c, "UPDATE model_groups SET latest_version = latest_version + 1, "
                            "last_updated_time = ?1, version = version + 1, seq_no = ?2, "
                            "doc = json_set(doc, '$.latest_version', latest_version + 1, "
                            "'$.last_updated_time', ?1) WHERE id = ?3 RETURNING latest_version",
                         &st);
    if (rc != MLR_OK)
        return rc;
    store__bind_int(st, 1, now);
    store__bind_int(st, 2, seq);
    store__bind_text(st, 3, id);
    return store__step_int(st, latest);
}

/*
 * PostgreSQL: the same bump through the document in C. jsonb_set() would hand the document back
 * re-serialised in jsonb's key order, and documents are kept as the text clients wrote. The load
 * locks the row (FOR UPDATE), so two nodes registering into one group get distinct versions.
 */
static int group_bump_pg(struct store__conn *c, const char *id, int64_t now, int64_t *latest)
{
    struct json_object *doc = NULL;
    char *cred = NULL;
    int rc = store__doc_load(c, STORE_MODEL_GROUP, id, &doc, &cred, NULL);
    int64_t v = 0;
    if (rc == MLR_OK) {
        v = json_object_get_int64(json_object_object_get(doc, "latest_version")) + 1;
        /* Each add replaces the member in place and consumes its value. */
        json_object_object_add(doc, "latest_version", json_object_new_int64(v));
        json_object_object_add(doc, "last_updated_time", json_object_new_int64(now));
        rc = store__doc_write(c, STORE_MODEL_GROUP, id, doc, cred, NULL, NULL);
    }
    if (rc == MLR_OK)
        *latest = v;
    json_object_put(doc);
    free(cred);
    return rc;
}

/* Resolves the target group (creating one named after the model if needed) and bumps its
 * version counter; the model's version is the new counter value. */
static int register_group(struct store__conn *c, struct register_op *r)
{
    int64_t now = mlr_now_ms(), latest = 0;
    if (r->group_id) {
        snprintf(r->used_group, sizeof(r->used_group), "%s", r->group_id);
    } else {
        const char *name = json_object_get_string(json_object_object_get(r->d.doc, "name"));
        int rc = group_by_name(c, name ? name : "", r->used_group, sizeof(r->used_group));
        if (rc == MLR_ENOTFOUND) {
            snprintf(r->used_group, sizeof(r->used_group), "%s", r->group_new_id);
            rc = store__doc_insert(c, STORE_MODEL_GROUP, r->group_new_id, r->group_doc, NULL, NULL);
        }
        if (rc != MLR_OK)
            return rc;
    }
    int rc = c->pg ? group_bump_pg(c, r->used_group, now, &latest)
                   : group_bump_sqlite(c, r->used_group, now, &latest);
    if (rc == MLR_ENOTFOUND)
        mlr_buf_puts(&r->d.detail, "group");
    snprintf(r->model_version, sizeof(r->model_version), "%lld", (long long)latest);
    return rc;
}

static int register_run(struct store__conn *c, struct store__op *op)
{
    struct register_op *r = container_of(op, struct register_op, d.op);
    if (store__doc_exists(c, STORE_MODEL, r->d.id))
        return MLR_EEXIST;
    if (r->connector_id && !store__doc_exists(c, STORE_CONNECTOR, r->connector_id)) {
        mlr_buf_puts(&r->d.detail, "connector");
        return MLR_ENOTFOUND;
    }
    int rc = register_group(c, r);
    if (rc != MLR_OK)
        return rc;
    json_object_object_add(r->d.doc, "model_group_id", json_object_new_string(r->used_group));
    json_object_object_add(r->d.doc, "model_version", json_object_new_string(r->model_version));
    r->d.version = 1;
    rc = store__doc_insert(c, STORE_MODEL, r->d.id, r->d.doc, r->d.credential, &r->d.seq_no);
    if (rc == MLR_OK)
        rc = store__doc_insert(c, STORE_TASK, r->task_id, r->task_doc, NULL, NULL);
    return rc;
}

static void register_free(struct register_op *r)
{
    json_object_put(r->d.doc);
    free(r->d.credential);
    mlr_buf_cleanup(&r->d.detail);
    free(r->group_id);
    free(r->group_new_id);
    json_object_put(r->group_doc);
    free(r->connector_id);
    free(r->task_id);
    json_object_put(r->task_doc);
    free(r);
}

static void register_done(struct store__op *op)
{
    struct register_op *r = container_of(op, struct register_op, d.op);
    struct store_write_result res = {
        .status = op->status,
        .id = r->d.id,
        .version = r->d.version,
        .seq_no = r->d.seq_no,
        .detail = r->d.detail.data ? r->d.detail.data : "",
        .task_id = r->task_id,
        .group_id = r->used_group,
        .model_version = r->model_version,
    };
    r->d.cb(&res, r->d.data);
    register_free(r);
}

static struct json_object *copy(struct json_object *o)
{
    struct json_object *out = NULL;
    if (o)
        json_object_deep_copy(o, &out, NULL);
    return out;
}

static char *dup_or_null(const char *s)
{
    return s ? mlr_xstrdup(s) : NULL;
}

int store_model_register(struct store *s, const struct store_model_register *req,
                         store_write_cb cb, void *data)
{
    struct register_op *r = mlr_xcalloc(1, sizeof(*r));
    r->d.op.run = register_run;
    r->d.op.done = register_done;
    r->d.kind = STORE_MODEL;
    snprintf(r->d.id, sizeof(r->d.id), "%s", req->model_id);
    r->d.doc = copy(req->model_doc);
    r->d.credential = dup_or_null(req->credential);
    r->d.cb = cb;
    r->d.data = data;
    mlr_buf_init(&r->d.detail, 4096);
    r->group_id = dup_or_null(req->group_id);
    r->group_new_id = dup_or_null(req->group_new_id);
    r->group_doc = copy(req->group_doc);
    r->connector_id = dup_or_null(req->connector_id);
    r->task_id = mlr_xstrdup(req->task_id);
    r->task_doc = copy(req->task_doc);
    int rc = store__submit(s, &r->d.op);
    if (rc != MLR_OK)
        register_free(r);
    return rc;
}

/* ---------------------------------- reads ---------------------------------- */

struct get_req {
    enum store_kind kind;
    char id[STORE_ID_MAX + 1];
    int with_credential;
    store_doc_cb cb;
    void *data;
    struct store_doc out;           /* filled on the pool thread */
    char *credential;
};

static int get_fn(struct store__conn *c, void *arg)
{
    struct get_req *g = arg;
    struct json_object *doc = NULL;
    int rc = store__doc_load(c, g->kind, g->id, &doc, &g->credential, &g->out);
    if (rc == MLR_ENOTFOUND) {
        struct store__stmt *st = NULL;
        int64_t any = 0;
        if (store__stmt(c, kinds[g->kind].any_sql, &st) == MLR_OK)
            store__step_int(st, &any);
        g->out.kind_empty = any == 0;
    }
    g->out.doc = doc;
    return rc;
}

static void get_done(int status, void *arg)
{
    struct get_req *g = arg;
    g->out.id = g->id;
    g->out.credential = g->with_credential ? g->credential : NULL;
    g->cb(status, &g->out, g->data);
    json_object_put(g->out.doc);
    if (g->credential)
        memset(g->credential, 0, strlen(g->credential));
    free(g->credential);
    free(g);
}

int store_doc_get(struct store *s, enum store_kind kind, const char *id, int with_credential,
                  store_doc_cb cb, void *data)
{
    struct get_req *g = mlr_xcalloc(1, sizeof(*g));
    g->kind = kind;
    snprintf(g->id, sizeof(g->id), "%s", id);
    g->with_credential = with_credential;
    g->cb = cb;
    g->data = data;
    int rc = store__read(s, get_fn, g, get_done);
    if (rc != MLR_OK)
        free(g);
    return rc;
}

/* ---------------------------------- search ---------------------------------- */

#define F(name, sql, numeric) {name, sql, numeric}
static const struct store__field group_fields[] = {
    F("_id", "id", 0),          F("name", "name", 0),       F("name.keyword", "name", 0),
    F("latest_version", "latest_version", 1), F("access", "access", 0),
    F("created_time", "created_time", 1), F("last_updated_time", "last_updated_time", 1),
};
static const struct store__field connector_fields[] = {
    F("_id", "id", 0),          F("name", "name", 0),       F("name.keyword", "name", 0),
    F("created_time", "created_time", 1), F("last_updated_time", "last_updated_time", 1),
};
static const struct store__field model_fields[] = {
    F("_id", "id", 0),          F("name", "name", 0),       F("name.keyword", "name", 0),
    F("model_group_id", "model_group_id", 0), F("connector_id", "connector_id", 0),
    F("model_state", "model_state", 0), F("created_time", "created_time", 1),
    F("last_updated_time", "last_updated_time", 1),
};
static const struct store__field task_fields[] = {
    F("_id", "id", 0),          F("task_type", "task_type", 0), F("state", "state", 0),
    F("model_id", "model_id", 0), F("create_time", "create_time", 1),
    F("last_update_time", "last_update_time", 1),
};

static const struct store__index indexes[STORE__KINDS] = {
    [STORE_MODEL_GROUP] = {"model_groups", ".plugins-ml-model-group", group_fields,
                           N(group_fields), "rowid"},
    [STORE_CONNECTOR] = {"connectors", ".plugins-ml-connector", connector_fields,
                         N(connector_fields), "rowid"},
    [STORE_MODEL] = {"models", ".plugins-ml-model", model_fields, N(model_fields), "rowid"},
    [STORE_TASK] = {"tasks", ".plugins-ml-task", task_fields, N(task_fields), "rowid"},
};

struct search_req {
    enum store_kind kind;
    struct store__query q;
    struct json_object *response;   /* built on the pool thread */
    store_search_cb cb;
    void *data;
};

static int search_fn(struct store__conn *c, void *arg)
{
    struct search_req *r = arg;
    return store__search_run(c, &indexes[r->kind], &r->q, &r->response);
}

static void search_done(int status, void *arg)
{
    struct search_req *r = arg;
    r->cb(status, r->response, r->data);
    json_object_put(r->response);
    store__query_cleanup(&r->q);
    free(r);
}

int store_doc_search(struct store *s, enum store_kind kind, struct json_object *body,
                     const struct store_access *acc, store_search_cb cb, void *data,
                     const char **err_type, char *err, size_t errlen)
{
    struct search_req *r = mlr_xcalloc(1, sizeof(*r));
    r->kind = kind;
    r->cb = cb;
    r->data = data;
    int rc = store__search_compile_dialect(&indexes[kind], body, store__main_conn(s)->pg != NULL,
                                           &r->q, err, errlen);
    if (rc != MLR_OK) {
        *err_type = r->q.err_type ? r->q.err_type : "parsing_exception";
        store__query_cleanup(&r->q);
        free(r);
        return rc;
    }
    store__query_restrict(&r->q, kind, acc);
    rc = store__read(s, search_fn, r, search_done);
    if (rc != MLR_OK) {
        store__query_cleanup(&r->q);
        free(r);
    }
    return rc;
}

const struct store__index *store__kind_index(enum store_kind kind)
{
    return &indexes[kind];
}
