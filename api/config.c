/*
 * config.c — node configuration: built-in defaults, then the config file, then the environment,
 * then the command line (spec §1: flags beat environment beats config file).
 *
 * The config file is a JSON object with flat dotted keys. Node keys (listen, data_dir, log.*,
 * http.*, workers.*, tls.*) configure this process; `plugins.ml_commons.*` and `mlrelay.*` keys are the
 * initial values of cluster settings and are validated exactly as a PUT would validate them. Any
 * other key is an error, so a typo is reported instead of silently ignored. Runs in main() before
 * any thread starts; not thread-safe.
 */
#include "api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

const char mlr_usage_text[] =
    "Usage: mlrelay [options]\n"
    "       mlrelay backup DEST [--data-dir DIR] [--config FILE]\n"
    "       mlrelay check [--data-dir DIR] [--config FILE]\n"
    "       mlrelay users add NAME [--backend-roles r1,r2] [--roles all_access] [--data-dir DIR]\n"
    "       mlrelay users list | users delete NAME [--data-dir DIR]\n"
    "       mlrelay rotate-master-key [--data-dir DIR]\n"
    "       mlrelay --help | --version\n"
    "\n"
    "Serves the OpenSearch ML Commons remote-model REST API (/_plugins/_ml/..., /_cluster/settings).\n"
    "\n"
    "Options:\n"
    "  --listen HOST:PORT     address to listen on (default 127.0.0.1:9200; port 0 = any free port)\n"
    "  --data-dir DIR         database, master key and node id (default ./data, created 0700)\n"
    "  --store URL            postgres://... or postgresql://...: keep the state in PostgreSQL,\n"
    "                         shared by every node pointed at it (default: SQLite in DATA_DIR)\n"
    "  --config FILE          JSON config file with flat dotted keys\n"
    "  --log-level LEVEL      debug | info | warn | error (default info)\n"
    "  --log-format FORMAT    text | json (default text)\n"
    "  --access-log BOOL      true | false: one info line per HTTP request (default true)\n"
    "  --tls-cert FILE        PEM certificate chain: the listener then speaks TLS only\n"
    "  --tls-key FILE         PEM private key of --tls-cert (unencrypted); SIGHUP reloads both\n"
    "  --help                 show this help and exit\n"
    "  --version              show the version and exit\n"
    "\n"
    "Commands (safe while a server runs on the same data directory; run them as its user):\n"
    "  backup DEST            copy the database consistently to the file DEST (written as\n"
    "                         DEST.tmp, fsynced, then renamed); exit 0 on success, 1 on failure\n"
    "  check                  integrity check and a summary (schema version, resources, models\n"
    "                         and tasks by state); exit 0 when healthy, 1 otherwise\n"
    "  users add NAME         add a user; the password is read from standard input (one line);\n"
    "                         --backend-roles and --roles take comma-separated lists, role\n"
    "                         all_access makes an admin. With any user, every request needs\n"
    "                         HTTP Basic credentials; changes reach a running server within 1 s\n"
    "  users list | delete NAME\n"
    "  rotate-master-key      re-encrypt every stored credential under a new master key in one\n"
    "                         transaction (stop the server first; with MLRELAY_MASTER_KEY set,\n"
    "                         the new key is printed and must replace it)\n"
    "  Usage errors exit 2.\n"
    "\n"
    "Environment (flags win over environment, environment over the config file):\n"
    "  MLRELAY_LISTEN, MLRELAY_DATA_DIR, MLRELAY_CONFIG, MLRELAY_ACCESS_LOG, MLRELAY_TLS_CERT,\n"
    "  MLRELAY_TLS_KEY, MLRELAY_STORE,\n"
    "  MLRELAY_MASTER_KEY (base64 of 32 bytes; overrides DATA_DIR/master.key),\n"
    "  MLRELAY_ADMIN_PASSWORD (creates user admin, role all_access, when no user exists)\n"
    "\n"
    "Config file keys: listen, data_dir, store.url, log.level, log.format, log.access,\n"
    "  http.max_content_length, http.max_header_size, http.max_connections, http.idle_timeout,\n"
    "  http.request_timeout, http.shutdown_timeout, workers.threads, tls.cert, tls.key, and any\n"
    "  plugins.ml_commons.* or mlrelay.* cluster setting as its initial value.\n";

static void set_str(char **dst, const char *v)
{
    free(*dst);
    *dst = mlr_xstrdup(v);
}

/* An empty path means "not set", so a later layer can switch off what an earlier one set. */
static void set_path(char **dst, const char *v)
{
    free(*dst);
    *dst = *v ? mlr_xstrdup(v) : NULL;
}

/* Parses "HOST:PORT" or "[V6]:PORT". */
static int parse_listen(struct mlr_config *cfg, const char *v, char *err, size_t errlen)
{
    const char *colon = strrchr(v, ':');
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (colon == NULL || colon == v || end == colon + 1 || *end != '\0' || port < 0 ||
        port > 65535) {
        snprintf(err, errlen, "invalid listen address [%s]: expected HOST:PORT", v);
        return MLR_EINVAL;
    }
    const char *host = v;
    size_t hlen = (size_t)(colon - v);
    if (host[0] == '[' && hlen >= 2 && host[hlen - 1] == ']') {
        host++;
        hlen -= 2;
    }
    free(cfg->listen_host);
    cfg->listen_host = mlr_xstrndup(host, hlen);
    cfg->listen_port = (int)port;
    return MLR_OK;
}

/* The node keys of the config file and how to parse each. */
enum key_kind {
    K_LISTEN, K_DATA_DIR, K_STORE, K_LOG_LEVEL, K_LOG_FORMAT, K_BOOL, K_BYTES, K_INT, K_TIME, K_PATH
};

struct node_key {
    const char *name;
    enum key_kind kind;
    size_t offset;   /* of the int64_t field for K_BYTES/K_INT/K_TIME, the int for K_BOOL,
                        the char * for K_PATH */
    int64_t min;     /* inclusive bounds for numbers */
    int64_t max;
};

#define OFF(f) offsetof(struct mlr_config, f)
static const struct node_key node_keys[] = {
    {"listen", K_LISTEN, 0, 0, 0},
    {"data_dir", K_DATA_DIR, 0, 0, 0},
    {"store.url", K_STORE, 0, 0, 0},
    {"log.level", K_LOG_LEVEL, 0, 0, 0},
    {"log.format", K_LOG_FORMAT, 0, 0, 0},
    {"log.access", K_BOOL, OFF(access_log), 0, 1},
    {"http.max_content_length", K_BYTES, OFF(max_content_length), 1, INT32_MAX},
    {"http.max_header_size", K_BYTES, OFF(max_header_size), 1024, 1024 * 1024},
    {"http.max_connections", K_INT, OFF(max_connections), 1, 1000000},
    {"http.idle_timeout", K_TIME, OFF(idle_timeout_ms), 1, INT32_MAX},
    {"http.request_timeout", K_TIME, OFF(request_timeout_ms), 1, INT32_MAX},
    {"http.shutdown_timeout", K_TIME, OFF(shutdown_timeout_ms), 0, INT32_MAX},
    {"workers.threads", K_INT, OFF(workers_threads), 1, 1024},
    {"tls.cert", K_PATH, OFF(tls_cert), 0, 0},
    {"tls.key", K_PATH, OFF(tls_key), 0, 0},
};

static int parse_number(const struct node_key *k, const char *v, int64_t *out)
{
    char *end;
    switch (k->kind) {
    case K_BYTES:
        return mlr_parse_bytes(v, out);
    case K_TIME:
        return mlr_parse_time_ms(v, 0, out);
    default:
        errno = 0;
        *out = strtoll(v, &end, 10);
        return errno == 0 && end != v && *end == '\0' ? MLR_OK : MLR_EINVAL;
    }
}

/* Applies one node key. Returns MLR_ENOTFOUND when @name is not a node key. */
static int set_node_key(struct mlr_config *cfg, const char *name, const char *v, char *err,
                        size_t errlen)
{
    const struct node_key *k = NULL;
    for (size_t i = 0; i < sizeof(node_keys) / sizeof(node_keys[0]); i++) {
        if (strcmp(node_keys[i].name, name) == 0)
            k = &node_keys[i];
    }
    if (k == NULL)
        return MLR_ENOTFOUND;
    int rc = MLR_OK;
    int64_t n = 0;
    switch (k->kind) {
    case K_LISTEN:
        return parse_listen(cfg, v, err, errlen);
    case K_DATA_DIR:
        set_str(&cfg->data_dir, v);
        return MLR_OK;
    case K_STORE:
        if (strncmp(v, "postgres://", 11) != 0 && strncmp(v, "postgresql://", 13) != 0) {
            snprintf(err, errlen, "invalid value for [store.url]: expected a postgres:// or "
                                  "postgresql:// URL");
            return MLR_EINVAL;
        }
        set_str(&cfg->store_url, v);
        return MLR_OK;
    case K_PATH:
        set_path((char **)((char *)cfg + k->offset), v);
        return MLR_OK;
    case K_LOG_LEVEL:
        rc = mlr_log_level_parse(v, &cfg->log_level);
        break;
    case K_LOG_FORMAT:
        rc = mlr_log_format_parse(v, &cfg->log_format);
        break;
    case K_BOOL: /* OpenSearch booleans: exactly "true" or "false" */
        rc = strcmp(v, "true") == 0 || strcmp(v, "false") == 0 ? MLR_OK : MLR_EINVAL;
        if (rc == MLR_OK)
            *(int *)((char *)cfg + k->offset) = strcmp(v, "true") == 0;
        break;
    default:
        rc = parse_number(k, v, &n);
        if (rc == MLR_OK && (n < k->min || n > k->max))
            rc = MLR_EINVAL;
        if (rc == MLR_OK)
            *(int64_t *)((char *)cfg + k->offset) = n;
        break;
    }
    if (rc != MLR_OK)
        snprintf(err, errlen, "invalid value [%s] for [%s]", v, name);
    return rc;
}

static int is_cluster_key(const char *k)
{
    return strncmp(k, "plugins.ml_commons.", 19) == 0 || strncmp(k, "mlrelay.", 8) == 0;
}

/* Routes one config-file entry to the node keys or the cluster layer. */
static int file_entry(struct mlr_config *cfg, const char *key, struct json_object *val,
                      struct json_object *cluster, char *err, size_t errlen)
{
    if (is_cluster_key(key)) {
        json_object_object_add(cluster, key, json_object_get(val)); /* consumes the new ref */
        return MLR_OK;
    }
    if (val == NULL || json_object_is_type(val, json_type_object) ||
        json_object_is_type(val, json_type_array)) {
        snprintf(err, errlen, "config key [%s] must have a string or number value", key);
        return MLR_EINVAL;
    }
    int rc = set_node_key(cfg, key, json_object_get_string(val), err, errlen);
    if (rc == MLR_ENOTFOUND) {
        snprintf(err, errlen, "unknown config key [%s]", key);
        rc = MLR_EINVAL;
    }
    return rc;
}

static int load_file(struct mlr_config *cfg, const char *path, char *err, size_t errlen)
{
    char why[400];
    struct json_object *root = json_object_from_file(path);
    if (root == NULL || !json_object_is_type(root, json_type_object)) {
        snprintf(err, errlen, "cannot read config file %s: %s", path,
                 root ? "not a JSON object" : json_util_get_last_err());
        json_object_put(root);
        return MLR_EINVAL;
    }
    struct json_object *cluster = json_object_new_object();
    int rc = MLR_OK;
    json_object_object_foreach(root, key, val)
    {
        rc = file_entry(cfg, key, val, cluster, why, sizeof(why));
        if (rc != MLR_OK)
            break;
    }
    if (rc == MLR_OK) {
        json_object_put(cfg->cluster);
        cfg->cluster = NULL;
        rc = mlr_settings_normalize(cluster, "config", &cfg->cluster, why, sizeof(why));
    }
    if (rc != MLR_OK)
        snprintf(err, errlen, "config file %s: %s", path, why);
    json_object_put(cluster);
    json_object_put(root);
    return rc;
}

static void set_defaults(struct mlr_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->listen_host = mlr_xstrdup("127.0.0.1");
    cfg->listen_port = 9200;
    cfg->data_dir = mlr_xstrdup("./data");
    cfg->log_level = MLR_LOG_INFO;
    cfg->log_format = MLR_LOG_TEXT;
    cfg->max_content_length = 100LL * 1024 * 1024;
    cfg->max_header_size = 16 * 1024;
    cfg->max_connections = 10000;
    cfg->idle_timeout_ms = 60000;
    cfg->request_timeout_ms = 30000;
    cfg->shutdown_timeout_ms = 5000;
    cfg->workers_threads = 4;
    cfg->access_log = 1;
    cfg->cluster = json_object_new_object();
}

/* Flags that take a value, and the node key each one sets. */
static const struct {
    const char *flag;
    const char *key;
} flag_keys[] = {
    {"--listen", "listen"},       {"--data-dir", "data_dir"},    {"--store", "store.url"},    {"--config", NULL},
    {"--log-level", "log.level"}, {"--log-format", "log.format"}, {"--access-log", "log.access"},
    {"--backend-roles", NULL},    {"--roles", NULL},            {"--tls-cert", "tls.cert"},
    {"--tls-key", "tls.key"},
};

/* Environment variables, and the node key each one sets (MLRELAY_CONFIG is read first, apart). */
static const struct {
    const char *name;
    const char *key;
} env_keys[] = {
    {"MLRELAY_LISTEN", "listen"},
    {"MLRELAY_DATA_DIR", "data_dir"},
    {"MLRELAY_STORE", "store.url"},
    {"MLRELAY_ACCESS_LOG", "log.access"},
    {"MLRELAY_TLS_CERT", "tls.cert"},
    {"MLRELAY_TLS_KEY", "tls.key"},
};

/* Commands: the first argument that is not an option, and how many arguments each takes. */
static const struct {
    const char *name;
    enum mlr_config_action action;
    int nargs;        /* arguments needed */
    int maxargs;      /* arguments allowed */
    const char *args; /* shown when they are missing */
} commands[] = {
    {"backup", MLR_RUN_BACKUP, 1, 1, "DEST"},
    {"check", MLR_RUN_CHECK, 0, 0, ""},
    {"users", MLR_RUN_USERS, 1, 2, "add NAME | list | delete NAME"},
    {"rotate-master-key", MLR_RUN_ROTATE_KEY, 0, 0, ""},
};

/* A certificate without its key (or the reverse) is a mistake, not a request for plaintext. */
static int check_tls_pair(const struct mlr_config *cfg, char *err, size_t errlen)
{
    if ((cfg->tls_cert == NULL) == (cfg->tls_key == NULL))
        return MLR_OK;
    snprintf(err, errlen, "tls.cert and tls.key must be set together: %s is set but %s is not",
             cfg->tls_cert ? "tls.cert" : "tls.key", cfg->tls_cert ? "tls.key" : "tls.cert");
    return MLR_EINVAL;
}

/* Finds the value of a valued flag in argv ("--x v" or "--x=v"); NULL when absent. */
static const char *flag_value(int argc, char **argv, const char *flag)
{
    size_t n = strlen(flag);
    const char *found = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], flag) == 0 && i + 1 < argc)
            found = argv[++i];
        else if (strncmp(argv[i], flag, n) == 0 && argv[i][n] == '=')
            found = argv[i] + n + 1;
    }
    return found;
}

/* Checks one option at argv[*i] (advancing *i past its value). Returns MLR_EINVAL with a message
 * for an unknown option or a missing value. */
static int check_flag(int argc, char **argv, int *i, char *err, size_t errlen)
{
    const char *a = argv[*i];
    for (size_t f = 0; f < sizeof(flag_keys) / sizeof(flag_keys[0]); f++) {
        size_t n = strlen(flag_keys[f].flag);
        if (strcmp(a, flag_keys[f].flag) == 0) {
            if (*i + 1 >= argc) {
                snprintf(err, errlen, "option %s needs a value", a);
                return MLR_EINVAL;
            }
            (*i)++;
            return MLR_OK;
        }
        if (strncmp(a, flag_keys[f].flag, n) == 0 && a[n] == '=')
            return MLR_OK;
    }
    snprintf(err, errlen, "unknown option [%s]", a);
    return MLR_EINVAL;
}

/* Takes one argument that is not an option: the command name first, then its arguments. */
static int take_positional(struct mlr_config *cfg, const char *a, int *cmd, int *nargs,
                           enum mlr_config_action *action, char *err, size_t errlen)
{
    if (*cmd < 0) {
        for (size_t c = 0; c < sizeof(commands) / sizeof(commands[0]); c++) {
            if (strcmp(a, commands[c].name) == 0)
                *cmd = (int)c;
        }
        if (*cmd < 0) {
            snprintf(err, errlen, "unknown command [%s]", a);
            return MLR_EINVAL;
        }
        *action = commands[*cmd].action;
        return MLR_OK;
    }
    if (*nargs >= commands[*cmd].maxargs) {
        snprintf(err, errlen, "unexpected argument [%s] for command %s", a, commands[*cmd].name);
        return MLR_EINVAL;
    }
    char **slot = *nargs == 0 ? &cfg->command_arg : &cfg->command_arg2;
    (*nargs)++;
    free(*slot);
    *slot = mlr_xstrdup(a);
    return MLR_OK;
}

/* Validates the shape of argv: known flags only, valued flags have a value, at most one command
 * with exactly its arguments. --help and --version win over everything after them. */
static int check_args(struct mlr_config *cfg, int argc, char **argv,
                      enum mlr_config_action *action, char *err, size_t errlen)
{
    int cmd = -1, nargs = 0, rc = MLR_OK;
    *action = MLR_RUN_SERVER;
    for (int i = 1; i < argc && rc == MLR_OK; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            *action = MLR_PRINT_HELP;
            return MLR_OK;
        }
        if (strcmp(a, "--version") == 0) {
            *action = MLR_PRINT_VERSION;
            return MLR_OK;
        }
        if (a[0] == '-')
            rc = check_flag(argc, argv, &i, err, errlen);
        else
            rc = take_positional(cfg, a, &cmd, &nargs, action, err, errlen);
    }
    if (rc == MLR_OK && cmd >= 0 && nargs < commands[cmd].nargs) {
        snprintf(err, errlen, "command %s needs %s: mlrelay %s %s", commands[cmd].name,
                 commands[cmd].args, commands[cmd].name, commands[cmd].args);
        rc = MLR_EINVAL;
    }
    return rc;
}

int mlr_config_load(struct mlr_config *cfg, int argc, char **argv,
                    const char *(*getenv_fn)(const char *), enum mlr_config_action *action,
                    char *err, size_t errlen)
{
    set_defaults(cfg);
    int rc = check_args(cfg, argc, argv, action, err, errlen);
    if (rc != MLR_OK || *action == MLR_PRINT_HELP || *action == MLR_PRINT_VERSION)
        return rc;
    const char *path = flag_value(argc, argv, "--config");
    if (path == NULL)
        path = getenv_fn("MLRELAY_CONFIG");
    const char *br = flag_value(argc, argv, "--backend-roles"), *ro = flag_value(argc, argv,
                                                                                 "--roles");
    cfg->user_backend_roles = br ? mlr_xstrdup(br) : NULL;
    cfg->user_roles = ro ? mlr_xstrdup(ro) : NULL;
    if (path && *path) {
        cfg->config_path = mlr_xstrdup(path);
        rc = load_file(cfg, path, err, errlen);
    }
    for (size_t e = 0; rc == MLR_OK && e < sizeof(env_keys) / sizeof(env_keys[0]); e++) {
        const char *v = getenv_fn(env_keys[e].name);
        if (v && *v)
            rc = set_node_key(cfg, env_keys[e].key, v, err, errlen);
    }
    for (size_t f = 0; rc == MLR_OK && f < sizeof(flag_keys) / sizeof(flag_keys[0]); f++) {
        const char *v = flag_keys[f].key ? flag_value(argc, argv, flag_keys[f].flag) : NULL;
        if (v)
            rc = set_node_key(cfg, flag_keys[f].key, v, err, errlen);
    }
    if (rc == MLR_OK)
        rc = check_tls_pair(cfg, err, errlen);
    return rc;
}

void mlr_config_cleanup(struct mlr_config *cfg)
{
    free(cfg->listen_host);
    free(cfg->data_dir);
    free(cfg->store_url);
    free(cfg->config_path);
    free(cfg->command_arg);
    free(cfg->command_arg2);
    free(cfg->user_backend_roles);
    free(cfg->user_roles);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    json_object_put(cfg->cluster);
    memset(cfg, 0, sizeof(*cfg));
}
