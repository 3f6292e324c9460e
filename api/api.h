/*
 * api.h — the HTTP face of mlrelay: node configuration (flags, environment, config file), the
 * HTTP/1.1 server on libuv + http-parser, the route table and the thin handlers.
 *
 * Threading: everything here runs on the loop thread except mlr_config_load(), which runs in
 * main() before the loop starts.
 */
#ifndef MLR_API_H
#define MLR_API_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common.h"
#include "store.h"
#include "workers.h"

struct json_object;

/* ------------------------------------------------------------------------------------------ */
/* Node configuration (spec §1): flags > environment > config file > built-in defaults.        */
/* ------------------------------------------------------------------------------------------ */

struct mlr_config {
    char *listen_host;                /* "127.0.0.1" */
    int listen_port;                  /* 9200; 0 = any free port */
    char *data_dir;                   /* "./data" */
    char *store_url;                  /* store.url: a PostgreSQL URL; NULL = SQLite in data_dir */
    char *config_path;                /* NULL = no config file */
    enum mlr_log_level log_level;     /* info */
    enum mlr_log_format log_format;   /* text */
    int64_t max_content_length;       /* http.max_content_length, bytes; 100mb */
    int64_t max_header_size;          /* http.max_header_size, bytes; 16kb */
    int64_t max_connections;          /* http.max_connections; 10000 */
    int64_t idle_timeout_ms;          /* http.idle_timeout; 60s */
    int64_t request_timeout_ms;       /* http.request_timeout (whole request received); 30s */
    int64_t shutdown_timeout_ms;      /* http.shutdown_timeout; 10s */
    int64_t workers_threads;          /* workers.threads; 4 */
    int access_log;                   /* log.access: one info line per request; 1 = on */
    char *command_arg;                /* `backup DEST`: DEST; `users SUB`: SUB; NULL otherwise */
    char *command_arg2;               /* `users add|delete NAME`: NAME */
    char *user_backend_roles;         /* `users add --backend-roles r1,r2` */
    char *user_roles;                 /* `users add --roles all_access` */
    char *tls_cert;                   /* tls.cert: PEM certificate chain path; NULL = no TLS */
    char *tls_key;                    /* tls.key: PEM private key path; set iff tls_cert is */
    struct json_object *cluster;      /* plugins.ml_commons.* / mlrelay.* initial values (flat) */
};

/** What mlr_config_load() decided main() should do. */
enum mlr_config_action {
    MLR_RUN_SERVER = 0,
    MLR_PRINT_HELP,
    MLR_PRINT_VERSION,
    MLR_RUN_BACKUP, /* `mlrelay backup DEST`: cfg->command_arg is DEST */
    MLR_RUN_CHECK,  /* `mlrelay check` */
    MLR_RUN_USERS,  /* `mlrelay users add NAME | list | delete NAME`: command_arg is the
                     * subcommand, command_arg2 the name */
    MLR_RUN_ROTATE_KEY, /* `mlrelay rotate-master-key` */
};

/**
 * Fills @cfg from built-in defaults, then the config file (`--config`, else MLRELAY_CONFIG),
 * then the environment (@getenv_fn, normally getenv), then the command line. On a bad flag,
 * value or config file, or only one of tls.cert and tls.key, returns MLR_EINVAL with a one-line
 * message in @err (main exits 2).
 * On success sets *@action: a command (`backup DEST`, `check`) is the first argument that is not
 * an option, and its argument goes to @cfg->command_arg; unknown commands and missing or extra
 * arguments are MLR_EINVAL too. @cfg must be released with mlr_config_cleanup() either way.
 */
int mlr_config_load(struct mlr_config *cfg, int argc, char **argv,
                    const char *(*getenv_fn)(const char *), enum mlr_config_action *action,
                    char *err, size_t errlen);

/** Releases what mlr_config_load() allocated; leaves @cfg zeroed. */
void mlr_config_cleanup(struct mlr_config *cfg);

/** The `--help` text. */
extern const char mlr_usage_text[];

/**
 * Runs the command @action (MLR_RUN_BACKUP or MLR_RUN_CHECK) against the database in
 * @cfg->data_dir, printing its summary on stdout and any error on stderr. Returns the process
 * exit code: 0 success (check: the database is healthy), 1 failure. Opens the database on its own
 * connections, so it is safe while a server runs on the same data directory. main() only.
 */
int api_cli_run(const struct mlr_config *cfg, enum mlr_config_action action);

/**
 * Takes an exclusive lock on @data_dir for as long as the returned descriptor stays open (one
 * server per data directory; key rotation needs the server stopped). Returns the descriptor, -1
 * when the directory cannot be opened, -2 when another process holds the lock.
 */
int api__data_dir_lock(const char *data_dir);

/** Where the store lives: store.url, or DATA_DIR/mlrelay.db. The caller frees it. */
char *api__store_location(const struct mlr_config *cfg);

/**
 * Start-up: finishes or rolls back a key rotation that was interrupted (master.key.new left
 * behind), according to whether the database already switched to the staged key.
 */
int api__master_key_recover(struct store *s, const char *data_dir, char *err, size_t errlen);

/* ------------------------------------------------------------------------------------------ */
/* Users and authentication (auth.c)                                                          */
/* ------------------------------------------------------------------------------------------ */

struct api_auth;

/**
 * Loads the users (synchronously, at start-up) and starts polling them for changes. Returns
 * MLR_OK with *@out, or an error with a message in @err.
 */
int api_auth_open(uv_loop_t *loop, struct store *s, struct api_auth **out, char *err,
                  size_t errlen);
/**
 * With no user yet, creates user "admin" (role all_access) with @password (spec §1,
 * MLRELAY_ADMIN_PASSWORD); a no-op when users exist or @password is NULL/empty. Slow (hashes).
 */
int api_auth_bootstrap(struct api_auth *a, const char *password);
/** Stops polling and frees @a once its timer closed (run the loop). Accepts NULL. */
void api_auth_close(struct api_auth *a);
/** Whether any user exists (then every request needs HTTP Basic credentials). */
int api_auth_enabled(const struct api_auth *a);
/* ------------------------------------------------------------------------------------------ */
/* Server                                                                                     */
/* ------------------------------------------------------------------------------------------ */

struct api_server;

/** Everything the handlers need, owned by main(). */
struct api_context {
    struct store *store;          /* durable state */
    struct workers *workers;      /* settings snapshot holder and, later, the pool */
    const char *node_id;          /* this node's 20-char id (data/node.id) */
    const char *node_name;        /* shown by GET / */
    const unsigned char *master_key; /* MLR_MASTER_KEY_LEN bytes sealing credentials */
    struct api_auth *auth;        /* users and HTTP Basic authentication */
};

/**
 * Binds @cfg->listen_host:@cfg->listen_port and starts accepting, speaking TLS when
 * @cfg->tls_cert is set. The bound port is available from api_server_port() (useful with port 0).
 * Returns MLR_OK, or an error with a message in @err (MLR_EIO with OpenSSL's reason when the
 * certificate or key cannot be loaded); *@out is untouched on failure.
 */
int api_server_open(uv_loop_t *loop, const struct mlr_config *cfg, const struct api_context *ctx,
                    struct api_server **out, char *err, size_t errlen);

/** The TCP port the server listens on. */
int api_server_port(const struct api_server *srv);

/** 1 when the listener speaks TLS only (tls.cert and tls.key are configured), else 0. */
int api_server_tls_enabled(const struct api_server *srv);

/** 1 when the listener is bound to a loopback address (127.0.0.0/8, ::1), else 0. */
int api_server_is_loopback(const struct api_server *srv);

/**
 * Re-reads tls.cert and tls.key (SIGHUP). On success connections accepted from now on use the new
 * certificate (open ones keep theirs) and its subject and expiry are logged; on failure the error
 * is logged and the previous certificate stays in use. Returns MLR_OK (also when TLS is not
 * configured: nothing to do) or MLR_EIO. Loop thread.
 */
int api_server_tls_reload(struct api_server *srv);

/** Called once the server has fully stopped (all connections closed). */
typedef void (*api_server_stop_cb)(void *data);

/**
 * Graceful stop: closes the listener and idle connections at once, lets requests in progress
 * finish and send their responses, force-closes whatever remains after the configured shutdown
 * timeout, then calls @cb and frees the server.
 */
void api_server_stop(struct api_server *srv, api_server_stop_cb cb, void *data);

#endif /* MLR_API_H */
