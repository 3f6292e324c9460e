/*
 * cli.c — the operations commands: `mlrelay backup DEST` and `mlrelay check`.
 *
 * They read the data directory from the same flags, environment and config file as the server
 * (mlr_config_load() has already resolved it), then call one store function and print its
 * outcome: a summary on stdout, a one-line error on stderr. They never create the data directory
 * or the database, need no master key, and open the database on their own connections, so they
 * are safe beside a running server. Exit codes: 0 success, 1 failure (usage errors, exit 2, are
 * caught earlier by mlr_config_load()). Runs in main() only, before any loop or thread.
 */
#include "api_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static int run_backup(const char *db, const char *dest)
{
    char err[1024] = "";
    struct store_backup_info info;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = store_backup(db, dest, NULL, &info, err, sizeof(err));
    if (rc != MLR_OK) {
        fprintf(stderr, "mlrelay: backup failed: %s\n", err);
        return 1;
    }
    double bytes = (double)info.pages * (double)info.page_size;
    printf("backup of %s written to %s: %lld pages of %lld bytes (%.1f MiB), schema version %d, "
           "%d steps, %.3f s\n",
           db, dest, (long long)info.pages, (long long)info.page_size, bytes / 1048576.0,
           info.schema_version, info.steps, seconds_since(&t0));
    return 0;
}

/* "5 (DEPLOYED 2, REGISTERED 3)" */
static void print_states(const char *label, int64_t total, const struct store_state_count *s,
                         int n)
{
    printf("%s: %lld", label, (long long)total);
    for (int i = 0; i < n; i++)
        printf("%s%s %lld", i == 0 ? " (" : ", ", s[i].state, (long long)s[i].count);
    printf("%s\n", n > 0 ? ")" : "");
}

/* Why a checked database is not healthy, or NULL when it is. */
static const char *problem(const struct store_check_report *r)
{
    if (!r->integrity_ok)
        return "integrity check failed";
    if (r->schema_version < 1)
        return "not an mlrelay database (schema version 0)";
    if (r->schema_version > r->schema_max)
        return "written by a newer mlrelay; this one refuses to open it";
    return r->counted ? NULL : "cannot count the resources";
}

static int run_check(const char *db)
{
    char err[1024] = "";
    struct store_check_report r;
    int rc = store_check(db, &r, err, sizeof(err));
    if (rc != MLR_OK) {
        printf("database: %s\nresult: failed (%s)\n", db, mlr_strerror(rc));
        fprintf(stderr, "mlrelay: check failed: %s\n", err);
        return 1;
    }
    printf("database: %s\n", db);
    printf("integrity: %s\n", r.integrity);
    printf("schema version: %d (this mlrelay: %d)\n", r.schema_version, r.schema_max);
    if (r.counted) {
        printf("model groups: %lld\n", (long long)r.model_groups);
        printf("connectors: %lld\n", (long long)r.connectors);
        print_states("models", r.models, r.model_states, r.nmodel_states);
        print_states("tasks", r.tasks, r.task_states, r.ntask_states);
        printf("models stored DEPLOYED (redeployed at start): %lld\n",
               (long long)r.models_deployed);
    }
    const char *why = problem(&r);
    printf("result: %s%s\n", why ? "failed: " : "ok", why ? why : "");
    if (why)
        fprintf(stderr, "mlrelay: check failed: %s: %s\n", db, why);
    return why ? 1 : 0;
}

char *api__store_location(const struct mlr_config *cfg)
{
    if (cfg->store_url)
        return mlr_xstrdup(cfg->store_url);
    return mlr_xasprintf("%s/mlrelay.db", cfg->data_dir);
}

int api_cli_run(const struct mlr_config *cfg, enum mlr_config_action action)
{
    char *db = mlr_xasprintf("%s/mlrelay.db", cfg->data_dir);
    int code = 1;
    if (cfg->store_url && (action == MLR_RUN_BACKUP || action == MLR_RUN_CHECK)) {
        /* PostgreSQL has its own tools for both, and they are the ones its operators trust. */
        fprintf(stderr, "mlrelay: %s works on the SQLite store; with PostgreSQL use %s\n",
                action == MLR_RUN_BACKUP ? "backup" : "check",
                action == MLR_RUN_BACKUP ? "pg_dump" : "pg_amcheck");
        free(db);
        return 2;
    }
    if (action == MLR_RUN_BACKUP)
        code = run_backup(db, cfg->command_arg);
    else if (action == MLR_RUN_CHECK)
        code = run_check(db);
    else if (action == MLR_RUN_USERS)
        code = api__cli_users(cfg);
    else if (action == MLR_RUN_ROTATE_KEY)
        code = api__cli_rotate_key(cfg);
    free(db);
    fflush(stdout);
    return code;
}
