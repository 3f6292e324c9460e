/*
 * fuzz_search.c — libFuzzer target for the `_search` compiler (store__search_compile), which
 * turns client JSON into SQL for every index. The compiled query is then run against the real
 * schema (every migration applied to an in-memory database holding a few rows), so the oracle is
 * not only the sanitizers: any query the compiler accepts must prepare and run without a SQLite
 * error, because an error there means client input reached the SQL text (an injection or a
 * compiler bug) rather than being bound as a value.
 *
 * Input: selector byte (the index: groups, connectors, models, tasks), then the search body.
 */
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>

#include "store_int.h"

static struct store__conn conn;

static void open_db(void)
{
    char err[256] = "";
    if (conn.db)
        return;
    if (sqlite3_open(":memory:", &conn.db) != SQLITE_OK ||
        store__migrate(conn.db, store__migrations, store__migrations_count, err, sizeof(err)) !=
            MLR_OK ||
        store__search_register(conn.db) != MLR_OK) {
        fprintf(stderr, "fuzz_search: cannot set up the database: %s\n", err);
        abort();
    }
    const char *rows =
        "INSERT INTO model_groups(id, name, created_time, last_updated_time, doc) VALUES"
        "('g1', 'group one', 1, 1, '{\"name\":\"group one\",\"a\":[1,\"x\",{\"b\":2.5}]}'),"
        "('g2', 'two', 2, 2, '{\"name\":\"two\",\"access\":\"public\",\"n\":null}');";
    if (sqlite3_exec(conn.db, rows, NULL, NULL, NULL) != SQLITE_OK) {
        fprintf(stderr, "fuzz_search: %s\n", sqlite3_errmsg(conn.db));
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    open_db();
    enum store_kind kind = (enum store_kind)(data[0] % STORE__KINDS);
    struct json_object *body = fuzz_json(data + 1, size - 1);
    if (body == NULL && size > 1)
        return 0;
    const struct store__index *ix = store__kind_index(kind);
    struct store__query q;
    char err[1024] = "";
    int rc = store__search_compile(ix, body, &q, err, sizeof(err));
    if (rc != MLR_OK) {
        if (rc != MLR_EINVAL || err[0] == '\0' || q.err_type == NULL)
            abort();
    } else {
        char *sql = store__search_sql(ix, &q);
        free(sql);
        struct json_object *out = NULL;
        rc = store__search_run(&conn, ix, &q, &out);
        if (rc != MLR_OK) {
            fprintf(stderr, "fuzz_search: compiled query failed to run: %s\n",
                    sqlite3_errmsg(conn.db));
            abort();
        }
        json_object_put(out);
    }
    store__query_cleanup(&q);
    json_object_put(body);
    return 0;
}
