/*
 * main.c — the mlrelay executable: reads the configuration, opens the data directory and the
 * store, loads the settings, starts the HTTP server and runs the loop until SIGTERM/SIGINT.
 *
 * This is the only file that wires modules together. Start-up order matters: the store is open
 * and migrated and the settings are loaded before the listener opens, so the first request sees
 * the same state as the last one before a restart. Stop order is the reverse: stop accepting,
 * let in-flight requests answer (their writes commit first), close the store, exit 0. SIGHUP
 * reloads the TLS certificate and key.
 *
 * The operations commands (`backup`, `check`) are parsed here too and run by api_cli_run()
 * instead of the server.
 *
 * Exit codes: 0 after a graceful stop, 1 when start-up fails (unreadable or too-new database,
 * port in use, unreadable or mismatched TLS certificate/key), 2 for a usage or configuration error.
 */
#include "api.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>
#include <curl/curl.h>
#include <openssl/crypto.h>

struct app {
    uv_loop_t loop;
    struct mlr_config cfg;
    struct store *store;
    struct workers *workers;
    struct api_server *server;
    struct api_auth *auth;        /* users; HTTP Basic authentication */
    int dir_lock;                 /* descriptor holding the data directory's lock, or < 0 */
    uv_signal_t sigterm;
    uv_signal_t sigint;
    uv_signal_t sighup;           /* reloads the TLS certificate */
    char node_id[MLR_ID_LEN + 1];
    unsigned char master_key[MLR_MASTER_KEY_LEN];
    char node_name[256];
    int stopping;
};

static const char *env(const char *name)
{
    return getenv(name);
}

/* mkdir -p with 0700 for the directories we create. */
static int make_dirs(const char *path)
{
    char *p = mlr_xstrdup(path);
    int rc = 0;
    for (char *s = p + 1; *s && rc == 0; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST)
            rc = -1;
        *s = '/';
    }
    if (rc == 0 && mkdir(p, 0700) != 0 && errno != EEXIST)
        rc = -1;
    free(p);
    return rc;
}

/* Reads data/node.id, creating it with a fresh id on first start. */
static int load_node_id(struct app *a, char *err, size_t errlen)
{
    char *path = mlr_xasprintf("%s/node.id", a->cfg.data_dir);
    int rc = MLR_OK;
    FILE *f = fopen(path, "r");
    if (f != NULL) {
        if (fscanf(f, "%20s", a->node_id) != 1 || strlen(a->node_id) != MLR_ID_LEN)
            rc = MLR_ECORRUPT;
        fclose(f);
    } else {
        rc = mlr_id_new(a->node_id);
        int fd = rc == MLR_OK ? open(path, O_WRONLY | O_CREAT | O_EXCL, 0600) : -1;
        if (fd < 0 || write(fd, a->node_id, MLR_ID_LEN) != MLR_ID_LEN || fsync(fd) != 0)
            rc = MLR_EIO;
        if (fd >= 0)
            close(fd);
    }
    if (rc != MLR_OK)
        snprintf(err, errlen, "cannot read or create %s", path);
    free(path);
    return rc;
}

/* Lets the process use as many descriptors as the hard limit allows (one per connection). */
/*
 * glibc gives every thread that allocates its own malloc arena (up to 8 per core), and memory
 * freed into one arena is not reused by another: a large request parsed on the loop, copied by
 * the store writer and parsed again on a pool thread (a batch ingestion job) leaves its peak in
 * three arenas. Two arenas keep resident memory near what is live (100 MB instead of 190 MB
 * for a 100,000-doc job) at no measurable cost in throughput. MALLOC_ARENA_MAX, when set, wins.
 */
static void limit_malloc_arenas(void)
{
#ifdef M_ARENA_MAX
    if (getenv("MALLOC_ARENA_MAX") == NULL)
        mallopt(M_ARENA_MAX, 2);
#endif
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void on_workers_stopped(void *data)
{
    struct app *a = data;
    store_close(a->store); /* runs the callbacks of the last commits, then closes */
    a->store = NULL;
    mlr_log(MLR_LOG_INFO, "main", "stopped");
}

/* The listener is closed and in-flight requests answered; now let running tasks record their
 * results (the store stays open for them), then close the store. */
static void on_server_stopped(void *data)
{
    struct app *a = data;
    api_auth_close(a->auth);
    a->auth = NULL;
    workers_stop(a->workers, on_workers_stopped, a);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct app *a = h->data;
    if (a->stopping)
        return;
    a->stopping = 1;
    mlr_log(MLR_LOG_INFO, "main", "received %s, stopping", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    uv_close((uv_handle_t *)&a->sigint, NULL);
    uv_close((uv_handle_t *)&a->sighup, NULL);
    api_server_stop(a->server, on_server_stopped, a);
}

static void on_sighup(uv_signal_t *h, int signum)
{
    struct app *a = h->data;
    UNUSED(signum);
    api_server_tls_reload(a->server); /* logs the outcome; a failure keeps the old certificate */
}

/* The one place that decides whether to warn about a plaintext listener reachable from other
 * hosts (spec §8): requests, and with users their passwords, would cross the network in clear. */
/* Spec §8: with users, a non-loopback listener without TLS would carry passwords in the clear.
 * (Without users, non-loopback clients are refused anyway.) */
static void warn_if_exposed(struct app *a)
{
    if (api_server_tls_enabled(a->server) || api_server_is_loopback(a->server) ||
        !api_auth_enabled(a->auth))
        return;
    mlr_log(MLR_LOG_WARN, "main",
            "listening on the non-loopback address %s without TLS while users are configured: "
            "passwords and requests travel in clear text; set tls.cert and tls.key",
            a->cfg.listen_host);
}

static int open_store(struct app *a, char *err, size_t errlen)
{
    if (make_dirs(a->cfg.data_dir) != 0) {
        snprintf(err, errlen, "cannot create data directory %s: %s", a->cfg.data_dir,
                 strerror(errno));
        return MLR_EIO;
    }
    /* One server per data directory: two would both think they own the deployments and the
     * master key. The lock lives as long as the process. */
    a->dir_lock = api__data_dir_lock(a->cfg.data_dir);
    if (a->dir_lock < 0) {
        snprintf(err, errlen, "%s %s", a->dir_lock == -2 ? "another mlrelay is running on"
                                                         : "cannot open the data directory",
                 a->cfg.data_dir);
        return MLR_EBUSY;
    }
    int rc = load_node_id(a, err, errlen);
    char *db = api__store_location(&a->cfg);
    struct store_options opts = {.node_id = a->node_id};
    if (rc == MLR_OK)
        rc = store_open(&a->loop, db, &opts, &a->store, err, errlen);
    free(db);
    if (rc == MLR_OK)
        rc = api__master_key_recover(a->store, a->cfg.data_dir, err, errlen);
    if (rc == MLR_OK)
        rc = mlr_master_key_load(a->cfg.data_dir, getenv("MLRELAY_MASTER_KEY"), a->master_key, err,
                                 errlen);
    return rc;
}

static int load_settings(struct app *a, char *err, size_t errlen)
{
    struct json_object *persistent = NULL;
    struct mlr_settings *settings = NULL;
    int rc = store_settings_load(a->store, &persistent);
    if (rc != MLR_OK)
        snprintf(err, errlen, "cannot load settings: %s", mlr_strerror(rc));
    if (rc == MLR_OK)
        rc = mlr_settings_new(a->cfg.cluster, persistent, NULL, &settings, err, errlen);
    json_object_put(persistent);
    if (rc == MLR_OK)
        a->workers = workers_new(&a->loop, settings, (int)a->cfg.workers_threads);
    if (rc == MLR_OK)
        rc = workers_start(a->workers, a->store, a->master_key, a->node_id, err, errlen);
    return rc;
}

/* Access control needs users (spec §8): a config file turning it on without any is an error. */
static int check_access_control(struct app *a, char *err, size_t errlen)
{
    static const char *const keys[] = {"plugins.ml_commons.model_access_control_enabled",
                                       "plugins.ml_commons.connector_access_control_enabled"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        struct json_object *v = json_object_object_get(a->cfg.cluster, keys[i]);
        if (v && strcmp(json_object_get_string(v), "true") == 0 && !api_auth_enabled(a->auth)) {
            snprintf(err, errlen, "config: [%s] cannot be true: no users are configured",
                     keys[i]);
            return MLR_EINVAL;
        }
    }
    return MLR_OK;
}

static int start(struct app *a, char *err, size_t errlen)
{
    int rc = open_store(a, err, errlen);
    if (rc == MLR_OK)
        rc = load_settings(a, err, errlen);
    if (rc == MLR_OK)
        rc = api_auth_open(&a->loop, a->store, &a->auth, err, errlen);
    if (rc == MLR_OK && api_auth_bootstrap(a->auth, getenv("MLRELAY_ADMIN_PASSWORD")) != MLR_OK) {
        snprintf(err, errlen, "cannot create the admin user");
        rc = MLR_EINTERNAL;
    }
    if (rc == MLR_OK)
        rc = check_access_control(a, err, errlen);
    if (rc != MLR_OK)
        return rc;
    if (gethostname(a->node_name, sizeof(a->node_name) - 1) != 0)
        snprintf(a->node_name, sizeof(a->node_name), "mlrelay");
    struct api_context ctx = {a->store, a->workers, a->node_id, a->node_name, a->master_key,
                              a->auth};
    rc = api_server_open(&a->loop, &a->cfg, &ctx, &a->server, err, errlen);
    if (rc != MLR_OK)
        return rc;
    uv_signal_init(&a->loop, &a->sigterm);
    uv_signal_init(&a->loop, &a->sigint);
    uv_signal_init(&a->loop, &a->sighup);
    a->sigterm.data = a->sigint.data = a->sighup.data = a;
    uv_signal_start(&a->sigterm, on_signal, SIGTERM);
    uv_signal_start(&a->sigint, on_signal, SIGINT);
    uv_signal_start(&a->sighup, on_sighup, SIGHUP);
    char port[16];
    snprintf(port, sizeof(port), "%d", api_server_port(a->server));
    const char *kv[] = {"host", a->cfg.listen_host, "port", port, "data_dir", a->cfg.data_dir,
                        "node_id", a->node_id};
    mlr_log_kv(MLR_LOG_INFO, "main", "listening", kv, 4);
    warn_if_exposed(a);
    return MLR_OK;
}

static int usage_error(const char *msg)
{
    fprintf(stderr, "mlrelay: %s\nTry 'mlrelay --help' for more information.\n", msg);
    return 2;
}

int main(int argc, char **argv)
{
    static struct app a = {.dir_lock = -1};
    char err[1024];
    enum mlr_config_action action;
    if (mlr_config_load(&a.cfg, argc, argv, env, &action, err, sizeof(err)) != MLR_OK) {
        mlr_config_cleanup(&a.cfg);
        return usage_error(err);
    }
    if (action == MLR_PRINT_HELP || action == MLR_PRINT_VERSION) {
        if (action == MLR_PRINT_HELP)
            fputs(mlr_usage_text, stdout);
        else
            printf("mlrelay %s (ML Commons API %s)\n", MLR_VERSION, MLR_API_LEVEL);
        mlr_config_cleanup(&a.cfg);
        return 0;
    }
    if (action != MLR_RUN_SERVER) {
        mlr_log_setup(a.cfg.log_level, a.cfg.log_format);
        umask(077); /* a backup holds sealed credentials: for this user only */
        int code = api_cli_run(&a.cfg, action);
        mlr_config_cleanup(&a.cfg);
        return code;
    }
    mlr_log_setup(a.cfg.log_level, a.cfg.log_format);
    umask(077); /* the database, its WAL and the key file are for this user only */
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    limit_malloc_arenas();
    /* libuv's pool runs the store's reads and the tasks; size it before its first use. */
    char pool[32];
    snprintf(pool, sizeof(pool), "%lld", (long long)a.cfg.workers_threads + 4);
    setenv("UV_THREADPOOL_SIZE", pool, 0);
    curl_global_init(CURL_GLOBAL_DEFAULT); /* before any thread starts */
    uv_loop_init(&a.loop);
    int rc = start(&a, err, sizeof(err));
    if (rc != MLR_OK)
        mlr_log(MLR_LOG_ERROR, "main", "%s", err);
    if (rc != MLR_OK && a.server == NULL) {
        api_auth_close(a.auth);
        a.auth = NULL;
    }
    if (rc != MLR_OK && a.server == NULL && a.workers != NULL) {
        workers_stop(a.workers, on_workers_stopped, &a);
    } else if (rc != MLR_OK && a.server == NULL) {
        store_close(a.store);
        a.store = NULL;
    }
    uv_run(&a.loop, UV_RUN_DEFAULT);
    workers_free(a.workers);
    OPENSSL_cleanse(a.master_key, sizeof(a.master_key));
    int closed = uv_loop_close(&a.loop);
    if (a.dir_lock >= 0)
        close(a.dir_lock); /* releases the data directory */
    mlr_config_cleanup(&a.cfg);
    curl_global_cleanup();
    if (closed != 0)
        mlr_log(MLR_LOG_WARN, "main", "event loop closed with handles still open");
    return rc == MLR_OK ? 0 : rc == MLR_EINVAL ? 2 : 1;
}
