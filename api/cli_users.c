/*
 * cli_users.c — `mlrelay users add|list|delete` and `mlrelay rotate-master-key` (spec §1, §8).
 *
 * Both open the database on their own connections, next to a running server if there is one
 * (SQLite's WAL lets them write while it serves; the server sees user changes within a second,
 * auth.c). Key rotation is the exception: the server holds the master key in memory, so rotating
 * under it would leave it sealing new credentials with the old key. The server holds an exclusive
 * lock on its data directory (main.c) and rotation refuses to run while it does.
 *
 * Runs in main() only, before any other loop or thread; each command drives a private loop.
 */
#include "api_int.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/crypto.h>

#define PASSWORD_MAX 1024
#define KEY_CHECK_AAD "mlrelay:master_key_check"

/* ---------------------------------- a store for one command ---------------------------------- */

struct cli_store {
    uv_loop_t loop;
    struct store *s;
    int done;        /* the op in flight finished */
    int status;      /* its status */
};

static int cli_open(const struct mlr_config *cfg, struct cli_store *c)
{
    char err[1024] = "";
    memset(c, 0, sizeof(*c));
    if (mkdir(cfg->data_dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "mlrelay: cannot create %s: %s\n", cfg->data_dir, strerror(errno));
        return MLR_EIO;
    }
    uv_loop_init(&c->loop);
    char *db = api__store_location(cfg);
    int rc = store_open(&c->loop, db, NULL, &c->s, err, sizeof(err));
    free(db);
    if (rc != MLR_OK) {
        fprintf(stderr, "mlrelay: %s\n", err);
        uv_loop_close(&c->loop);
    }
    return rc;
}

static void cli_close(struct cli_store *c)
{
    store_close(c->s);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    uv_loop_close(&c->loop);
}

/* Runs the loop until the op in flight calls back (the store's handles keep it alive). */
static int cli_wait(struct cli_store *c)
{
    while (!c->done)
        uv_run(&c->loop, UV_RUN_ONCE);
    c->done = 0;
    return c->status;
}

static void on_done(int status, void *data)
{
    struct cli_store *c = data;
    c->status = status;
    c->done = 1;
}

/* ---------------------------------- users ---------------------------------- */

/* "a, b,,c" -> ["a","b","c"] as JSON text (heap). */
static char *csv_to_json(const char *csv)
{
    struct json_object *a = json_object_new_array();
    const char *p = csv ? csv : "";
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        while (n > 0 && isspace((unsigned char)*p)) {
            p++;
            n--;
        }
        while (n > 0 && isspace((unsigned char)p[n - 1]))
            n--;
        if (n > 0)
            json_object_array_add(a, json_object_new_string_len(p, (int)n));
        p = end ? end + 1 : p + strlen(p);
    }
    char *out = mlr_xstrdup(json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN));
    json_object_put(a);
    return out;
}

/* A user name HTTP Basic can carry: no colon, no control characters. */
static int name_valid(const char *name)
{
    if (name == NULL || *name == '\0' || strlen(name) > STORE_USER_NAME_MAX)
        return 0;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (*p == ':' || *p < 0x20 || *p == 0x7f)
            return 0;
    }
    return 1;
}

/* Reads the password: the first line of standard input (without echo on a terminal). */
static int read_password(char *buf, size_t cap)
{
    struct termios old, quiet;
    int tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
    if (tty) {
        fprintf(stderr, "password: ");
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
    }
    int ok = fgets(buf, (int)cap, stdin) != NULL;
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSANOW, &old);
        fprintf(stderr, "\n");
    }
    if (!ok)
        return -1;
    buf[strcspn(buf, "\r\n")] = '\0';
    return buf[0] == '\0' ? -1 : 0;
}

static int users_add(const struct mlr_config *cfg, const char *name)
{
    char password[PASSWORD_MAX], *hash = NULL;
    if (read_password(password, sizeof(password)) != 0) {
        fprintf(stderr, "mlrelay: give the password on standard input (one non-empty line)\n");
        return 1;
    }
    int rc = mlr_password_hash(password, 0, &hash);
    OPENSSL_cleanse(password, sizeof(password));
    if (rc != MLR_OK) {
        fprintf(stderr, "mlrelay: cannot hash the password: %s\n", mlr_strerror(rc));
        return 1;
    }
    char *br = csv_to_json(cfg->user_backend_roles), *ro = csv_to_json(cfg->user_roles);
    struct store_user u = {.name = name, .password_hash = hash, .backend_roles = br, .roles = ro};
    struct cli_store c;
    int code = 1;
    if (cli_open(cfg, &c) == MLR_OK) {
        rc = store_user_put(c.s, &u, 0, on_done, &c);
        rc = rc == MLR_OK ? cli_wait(&c) : rc;
        if (rc == MLR_OK)
            printf("added user %s (backend_roles %s, roles %s)\n", name, br, ro);
        else
            fprintf(stderr, "mlrelay: cannot add user %s: %s\n", name,
                    rc == MLR_EEXIST ? "a user of that name exists" : mlr_strerror(rc));
        code = rc == MLR_OK ? 0 : 1;
        cli_close(&c);
    }
    free(br);
    free(ro);
    free(hash);
    return code;
}

static void on_users(int status, struct json_object *users, int64_t version, void *data)
{
    struct cli_store *c = data;
    UNUSED(version);
    if (status == MLR_OK) {
        json_object_object_foreach(users, name, u)
        {
            printf("%s backend_roles=%s roles=%s\n", name,
                   json_object_to_json_string_ext(json_object_object_get(u, "backend_roles"),
                                                  JSON_C_TO_STRING_PLAIN),
                   json_object_to_json_string_ext(json_object_object_get(u, "roles"),
                                                  JSON_C_TO_STRING_PLAIN));
        }
    }
    on_done(status, c);
}

static int users_list_or_delete(const struct mlr_config *cfg, const char *name)
{
    struct cli_store c;
    if (cli_open(cfg, &c) != MLR_OK)
        return 1;
    int rc = name ? store_user_delete(c.s, name, on_done, &c)
                  : store_users_read(c.s, -1, on_users, &c);
    rc = rc == MLR_OK ? cli_wait(&c) : rc;
    if (rc == MLR_OK && name)
        printf("deleted user %s\n", name);
    else if (rc != MLR_OK)
        fprintf(stderr, "mlrelay: %s\n", rc == MLR_ENOTFOUND ? "no such user" : mlr_strerror(rc));
    cli_close(&c);
    return rc == MLR_OK ? 0 : 1;
}

int api__cli_users(const struct mlr_config *cfg)
{
    const char *sub = cfg->command_arg, *name = cfg->command_arg2;
    int named = strcmp(sub, "add") == 0 || strcmp(sub, "delete") == 0;
    if ((!named && strcmp(sub, "list") != 0) || (named != (name != NULL))) {
        fprintf(stderr, "mlrelay: usage: mlrelay users add NAME | list | delete NAME\n");
        return 2;
    }
    if (named && !name_valid(name)) {
        fprintf(stderr, "mlrelay: a user name is 1-%d characters without ':' or control "
                        "characters\n",
                STORE_USER_NAME_MAX);
        return 2;
    }
    if (strcmp(sub, "add") == 0)
        return users_add(cfg, name);
    return users_list_or_delete(cfg, strcmp(sub, "delete") == 0 ? name : NULL);
}

/* ---------------------------------- master key rotation ---------------------------------- */

struct rekey_keys {
    unsigned char old_key[MLR_MASTER_KEY_LEN];
    unsigned char new_key[MLR_MASTER_KEY_LEN];
};

/* Writer thread: opens every value of one credential map with the old key, seals it with the
 * new one under the same context. */
static int rekey_one(const char *owner, const char *sealed, char **out, void *arg)
{
    struct rekey_keys *k = arg;
    struct json_object *map = json_tokener_parse(sealed), *fresh = json_object_new_object();
    int rc = json_object_is_type(map, json_type_object) ? MLR_OK : MLR_ECORRUPT;
    if (rc == MLR_OK) {
        json_object_object_foreach(map, name, val)
        {
            char *aad = mlr_xasprintf("%s:%s", owner, name), *plain = NULL, *text = NULL;
            size_t len = 0;
            rc = mlr_secret_decrypt(k->old_key, aad, json_object_get_string(val), &plain, &len);
            if (rc == MLR_OK)
                rc = mlr_secret_encrypt(k->new_key, aad, plain, len, &text);
            if (plain)
                mlr_secret_free(plain, len);
            free(aad);
            if (rc != MLR_OK)
                break;
            json_object_object_add(fresh, name, json_object_new_string(text));
            free(text);
        }
    }
    if (rc == MLR_OK)
        *out = mlr_xstrdup(json_object_to_json_string_ext(fresh, JSON_C_TO_STRING_PLAIN));
    json_object_put(map);
    json_object_put(fresh);
    return rc;
}

static void on_rekeyed(const struct store_write_result *r, void *data)
{
    struct cli_store *c = data;
    c->status = r->status;
    c->done = r->count + 1; /* never 0: done */
}

int api__data_dir_lock(const char *data_dir)
{
    int fd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        return -2;
    }
    return fd;
}

/* Rewrites every credential, then installs the new key (or prints it when it came from the
 * environment). Returns the exit code. */
static int rotate(const struct mlr_config *cfg, struct rekey_keys *k, int from_env)
{
    char err[1024] = "", b64[MLR_MASTER_KEY_B64 + 1], *check = NULL;
    struct cli_store c;
    int rc = mlr_secret_encrypt(k->new_key, KEY_CHECK_AAD, "mlrelay", 7, &check);
    if (rc == MLR_OK && from_env) { /* shown before the switch, so it cannot be lost */
        mlr_master_key_encode(k->new_key, b64);
        printf("new master key (set MLRELAY_MASTER_KEY to it before starting mlrelay): %s\n", b64);
        fflush(stdout);
        OPENSSL_cleanse(b64, sizeof(b64));
    } else if (rc == MLR_OK) {
        rc = mlr_master_key_stage(cfg->data_dir, k->new_key, err, sizeof(err));
    }
    if (rc == MLR_OK && cli_open(cfg, &c) == MLR_OK) {
        rc = store_credentials_rekey(c.s, rekey_one, k, check, on_rekeyed, &c);
        if (rc == MLR_OK)
            rc = cli_wait(&c);
        int count = c.done;
        cli_close(&c);
        if (!from_env && mlr_master_key_commit(cfg->data_dir, rc == MLR_OK, err,
                                               sizeof(err)) != MLR_OK && rc == MLR_OK)
            rc = MLR_EIO;
        if (rc == MLR_OK)
            printf("re-encrypted every stored credential under a new master key%s\n",
                   from_env ? "" : " (master.key replaced)");
        UNUSED(count);
    } else if (rc == MLR_OK) {
        rc = MLR_EIO;
    }
    free(check);
    if (rc != MLR_OK)
        fprintf(stderr, "mlrelay: key rotation failed, the old key stays in use: %s\n",
                err[0] ? err : mlr_strerror(rc));
    return rc == MLR_OK ? 0 : 1;
}

int api__cli_rotate_key(const struct mlr_config *cfg)
{
    char err[1024] = "";
    int lock = api__data_dir_lock(cfg->data_dir);
    if (lock < 0) {
        fprintf(stderr, "mlrelay: %s\n", lock == -2 ? "mlrelay is running on this data "
                                                      "directory: stop it first"
                                                    : "cannot open the data directory");
        return 1;
    }
    struct rekey_keys k;
    const char *env = getenv("MLRELAY_MASTER_KEY");
    int from_env = env && *env;
    int rc = mlr_master_key_load(cfg->data_dir, env, k.old_key, err, sizeof(err));
    if (rc == MLR_OK)
        rc = mlr_master_key_new(k.new_key);
    int code = 1;
    if (rc == MLR_OK)
        code = rotate(cfg, &k, from_env);
    else
        fprintf(stderr, "mlrelay: %s\n", err[0] ? err : mlr_strerror(rc));
    OPENSSL_cleanse(&k, sizeof(k));
    close(lock);
    return code;
}

int api__master_key_recover(struct store *s, const char *data_dir, char *err, size_t errlen)
{
    unsigned char staged[MLR_MASTER_KEY_LEN];
    if (mlr_master_key_staged(data_dir, staged) != MLR_OK)
        return MLR_OK; /* no rotation was interrupted */
    char *check = NULL, *plain = NULL;
    size_t len = 0;
    int committed = store_meta_get(s, "master_key_check", &check) == MLR_OK &&
                    mlr_secret_decrypt(staged, KEY_CHECK_AAD, check, &plain, &len) == MLR_OK;
    if (plain)
        mlr_secret_free(plain, len);
    free(check);
    OPENSSL_cleanse(staged, sizeof(staged));
    mlr_log(MLR_LOG_WARN, "main", "an interrupted master key rotation was %s",
            committed ? "completed: master.key.new becomes master.key"
                      : "rolled back: master.key.new is removed");
    return mlr_master_key_commit(data_dir, committed, err, errlen);
}
