/*
 * auth.c — who is calling (spec §8): HTTP Basic authentication once any user exists.
 *
 * The users live in the store; this keeps them in memory and polls their version every second,
 * so `mlrelay users add/delete` from another process takes effect without a restart. With no
 * user at all, requests carry no identity and the server only serves loopback clients
 * (server.c).
 *
 * Checking a password costs a PBKDF2 run of a few hundred milliseconds, so it runs on libuv's
 * thread pool, at most VERIFY_MAX at a time, and what was verified is cached: the cache holds,
 * per user, a keyed SHA-256 of the last password that verified (token_of()), so an authenticated
 * request costs one short digest and the cache never holds a password.
 * A users change empties the cache. Failed checks are counted per client address: past
 * FAIL_MAX in FAIL_WINDOW_MS, that address gets 429 for anything that is not a cache hit, which
 * bounds the CPU a password guesser can burn.
 *
 * Loop thread only, except verify_run() on the pool.
 */
#include "api_int.h"

#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define POLL_MS 1000           /* how often the users version is checked */
#define VERIFY_MAX 2           /* password checks running at once (the machine's cores) */
#define VERIFY_QUEUE_MAX 256   /* checks waiting; beyond, 429 */
#define FAIL_MAX 10            /* failed checks per address and window before 429 */
#define FAIL_WINDOW_MS 60000
#define FAIL_SLOTS 1024        /* addresses tracked (a hash table that overwrites on collision) */
#define CRED_MAX 1024          /* longest "name:password" accepted */
#define TOKEN_LEN 32
/* Checked for unknown user names so that their answer takes as long as a wrong password's: a
 * well-formed hash at the same cost that no password matches (its salt and hash are made up). */
#define DUMMY_HASH "pbkdf2_sha256$600000$bWxyZWxheS1kdW1teS0=$" \
                   "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

struct fail_slot {
    char addr[64];
    int count;
    int64_t window_start;      /* monotonic ms */
};

struct verify {
    uv_work_t work;
    struct api_auth *auth;
    struct api_req *req;
    char *name;
    char *password;            /* wiped and freed after the check */
    char *stored;              /* the stored hash (or a dummy one for unknown users) */
    int result;                /* mlr_password_verify() */
    struct verify *next;       /* waiting FIFO */
};

struct api_auth {
    uv_loop_t *loop;
    struct store *store;
    uv_timer_t poll;
    int polling;               /* a users read is in flight */
    int closing;
    int poll_closed;           /* the timer is closed: free once no users read is in flight */
    int64_t version;           /* users version held */
    struct json_object *users; /* {name: {password_hash, backend_roles, roles}} */
    struct json_object *cache; /* name -> hex HMAC of the password that last verified */
    unsigned char key[32];     /* cache-token key, random per process */
    EVP_MD_CTX *keyed;         /* SHA-256 that has absorbed key: copied per token */
    EVP_MD_CTX *scratch;       /* where a token is finished */
    const char *dummy_hash;    /* DUMMY_HASH */
    int verifying;
    struct verify *wait_head, *wait_tail;
    int nwaiting;
    struct fail_slot fails[FAIL_SLOTS];
};

/* ---------------------------------- users ---------------------------------- */

static void auth_free(struct api_auth *a);
static void verify_free(struct verify *v);
static int auth_maybe_free(struct api_auth *a);


static void install_users(struct api_auth *a, struct json_object *users, int64_t version)
{
    json_object_put(a->users);
    a->users = json_object_get(users);
    a->version = version;
    json_object_put(a->cache);
    a->cache = json_object_new_object();
    mlr_log(MLR_LOG_INFO, "auth", "%d users configured%s", json_object_object_length(users),
            json_object_object_length(users) ? ": HTTP Basic authentication required" : "");
}


static void on_users_read(int status, struct json_object *users, int64_t version, void *data)
{
    struct api_auth *a = data;
    a->polling = 0;
    if (a->poll_closed) { /* closed while this read was in flight: it may have waited for us */
        auth_maybe_free(a);
        return;
    }
    if (status != MLR_OK && status != MLR_ECLOSED)
        mlr_log(MLR_LOG_WARN, "auth", "cannot read the users: %s", mlr_strerror(status));
    if (status == MLR_OK && users && !a->closing)
        install_users(a, users, version);
}

static void on_poll(uv_timer_t *t)
{
    struct api_auth *a = container_of(t, struct api_auth, poll);
    if (a->polling || a->closing)
        return;
    if (store_users_read(a->store, a->version, on_users_read, a) == MLR_OK)
        a->polling = 1;
}

int api_auth_open(uv_loop_t *loop, struct store *s, struct api_auth **out, char *err,
                  size_t errlen)
{
    struct api_auth *a = mlr_xcalloc(1, sizeof(*a));
    struct json_object *users = NULL;
    int64_t version = 0;
    int rc = store_users_load(s, &users, &version);
    if (rc == MLR_OK && RAND_bytes(a->key, sizeof(a->key)) != 1)
        rc = MLR_EINTERNAL;
    a->keyed = EVP_MD_CTX_new();
    a->scratch = EVP_MD_CTX_new();
    if (rc == MLR_OK && (a->keyed == NULL || a->scratch == NULL ||
                         EVP_DigestInit_ex(a->keyed, EVP_sha256(), NULL) != 1 ||
                         EVP_DigestUpdate(a->keyed, a->key, sizeof(a->key)) != 1))
        rc = MLR_EINTERNAL;
    if (rc != MLR_OK) {
        snprintf(err, errlen, "cannot load the users: %s", mlr_strerror(rc));
        json_object_put(users);
        EVP_MD_CTX_free(a->keyed);
        EVP_MD_CTX_free(a->scratch);
        free(a);
        return rc;
    }
    a->loop = loop;
    a->store = s;
    a->dummy_hash = DUMMY_HASH;
    install_users(a, users, version);
    json_object_put(users);
    uv_timer_init(loop, &a->poll);
    uv_timer_start(&a->poll, on_poll, POLL_MS, POLL_MS);
    *out = a;
    return MLR_OK;
}

static void auth_free(struct api_auth *a);

/* Frees @a once closed and nothing in flight still points at it. */
static int auth_maybe_free(struct api_auth *a)
{
    if (!a->poll_closed || a->polling || a->verifying > 0)
        return 0;
    auth_free(a);
    return 1;
}

static void auth_free(struct api_auth *a)
{
    json_object_put(a->users);
    json_object_put(a->cache);
    OPENSSL_cleanse(a->key, sizeof(a->key));
    EVP_MD_CTX_free(a->keyed);
    EVP_MD_CTX_free(a->scratch);
    free(a);
}

static void on_poll_closed(uv_handle_t *h)
{
    struct api_auth *a = container_of((uv_timer_t *)h, struct api_auth, poll);
    a->poll_closed = 1;
    auth_maybe_free(a); /* else the users read or password check in flight frees it */
}

void api_auth_close(struct api_auth *a)
{
    if (a == NULL)
        return;
    /* The server stopped first, so only a forced stop leaves requests here: checks waiting
     * for a turn are answered now, checks running answer when they return. */
    a->closing = 1;
    while (a->wait_head) {
        struct verify *v = a->wait_head;
        a->wait_head = v->next;
        struct api_req *req = v->req;
        verify_free(v);
        api_send_error(req, 500, "exception", "the server is stopping");
    }
    a->wait_tail = NULL;
    a->nwaiting = 0;
    uv_close((uv_handle_t *)&a->poll, on_poll_closed);
}

int api_auth_enabled(const struct api_auth *a)
{
    return a != NULL && json_object_object_length(a->users) > 0;
}

/* ---------------------------------- failures per address ---------------------------------- */

static struct fail_slot *fail_slot(struct api_auth *a, const char *addr)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)addr; *p; p++)
        h = (h ^ *p) * 16777619u;
    struct fail_slot *f = &a->fails[h % FAIL_SLOTS];
    int64_t now = mlr_mono_ms();
    if (strcmp(f->addr, addr) != 0 || now - f->window_start > FAIL_WINDOW_MS) {
        snprintf(f->addr, sizeof(f->addr), "%s", addr);
        f->count = 0;
        f->window_start = now;
    }
    return f;
}

/* ---------------------------------- the check ---------------------------------- */

/*
 * The cache token of @password, SHA-256(process key || password) in hex, into @hex. A secret
 * prefix is enough here (the tokens never leave the process), and continuing a digest that has
 * already absorbed the key costs ~0.15 us where OpenSSL's one-shot HMAC() costs ~5 us.
 */
static void token_of(const struct api_auth *a, const char *password, char hex[2 * TOKEN_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    unsigned char mac[TOKEN_LEN];
    unsigned int len = TOKEN_LEN;
    EVP_MD_CTX_copy_ex(a->scratch, a->keyed);
    EVP_DigestUpdate(a->scratch, password, strlen(password));
    EVP_DigestFinal_ex(a->scratch, mac, &len);
    for (int i = 0; i < TOKEN_LEN; i++) {
        hex[2 * i] = digits[mac[i] >> 4];
        hex[2 * i + 1] = digits[mac[i] & 15];
    }
    hex[2 * TOKEN_LEN] = '\0';
    OPENSSL_cleanse(mac, sizeof(mac));
}

/* Fills req->user from the stored user @name (copied into the request's pool). */
static void set_user(struct api_req *req, const char *name, struct json_object *u)
{
    struct workers_user *wu = mlr_pool_alloc(&req->pool, sizeof(*wu));
    memset(wu, 0, sizeof(*wu));
    wu->name = mlr_pool_strdup(&req->pool, name);
    struct json_object *lists[2] = {json_object_object_get(u, "backend_roles"),
                                    json_object_object_get(u, "roles")};
    for (int l = 0; l < 2; l++) {
        int n = json_object_is_type(lists[l], json_type_array)
                    ? (int)json_object_array_length(lists[l])
                    : 0;
        const char **v = mlr_pool_alloc(&req->pool, sizeof(char *) * (size_t)(n + 1));
        for (int i = 0; i < n; i++) {
            v[i] = mlr_pool_strdup(&req->pool,
                                   json_object_get_string(json_object_array_get_idx(lists[l],
                                                                                    (size_t)i)));
            if (l == 1 && strcmp(v[i], "all_access") == 0)
                wu->admin = 1;
        }
        v[n] = NULL;
        if (l == 0) {
            wu->backend_roles = v;
            wu->nbackend_roles = n;
        } else {
            wu->roles = v;
            wu->nroles = n;
        }
    }
    req->user = wu;
}

static void refuse(struct api_req *req, int status, const char *reason)
{
    struct mlr_buf out;
    mlr_buf_init(&out, 0);
    struct json_object *env = api_error_body(status, "security_exception", reason);
    api_render(env, req->pretty, &out);
    json_object_put(env);
    api__conn_respond(req, status, status == 401 ? "www-authenticate: Basic realm=\"mlrelay\"\r\n"
                                                 : NULL,
                      &out);
    mlr_buf_cleanup(&out);
}

static void verify_start(struct api_auth *a, struct verify *v);

static void verify_free(struct verify *v)
{
    OPENSSL_cleanse(v->password, strlen(v->password));
    free(v->password);
    free(v->name);
    free(v->stored);
    free(v);
}

static void verify_run(uv_work_t *w)
{
    struct verify *v = container_of(w, struct verify, work);
    v->result = mlr_password_verify(v->password, v->stored);
}

static void verify_after(uv_work_t *w, int status)
{
    struct verify *v = container_of(w, struct verify, work);
    struct api_auth *a = v->auth;
    struct api_req *req = v->req;
    a->verifying--;
    if (a->closing) { /* a forced stop: the answer no longer matters, only the memory does */
        verify_free(v);
        api_send_error(req, 500, "exception", "the server is stopping");
        auth_maybe_free(a);
        return;
    }
    if (a->wait_head && !a->closing) { /* the next waiting check */
        struct verify *next = a->wait_head;
        a->wait_head = next->next;
        if (a->wait_head == NULL)
            a->wait_tail = NULL;
        a->nwaiting--;
        verify_start(a, next);
    }
    struct json_object *u = json_object_object_get(a->users, v->name);
    /* The users may have been reloaded meanwhile: the check counts if this user still has the
     * password hash it was checked against. */
    const char *now_hash = json_object_get_string(json_object_object_get(u, "password_hash"));
    if (status == 0 && v->result == MLR_OK && u && now_hash && strcmp(now_hash, v->stored) == 0) {
        char token[2 * TOKEN_LEN + 1];
        token_of(a, v->password, token);
        json_object_object_add(a->cache, v->name, json_object_new_string(token));
        set_user(req, v->name, u);
        verify_free(v);
        api__dispatch_authenticated(req);
        return;
    }
    fail_slot(a, req->client)->count++;
    const char *kv[] = {"user", v->name, "client", req->client};
    mlr_log_kv(MLR_LOG_WARN, "auth", "authentication failed", kv, 2);
    verify_free(v);
    refuse(req, 401, "Unauthorized");
}

static void verify_start(struct api_auth *a, struct verify *v)
{
    a->verifying++;
    if (uv_queue_work(a->loop, &v->work, verify_run, verify_after) != 0) {
        v->result = MLR_EINTERNAL;
        verify_after(&v->work, -1);
    }
}

/* Splits "Basic base64(name:password)" into heap strings. Returns 0 or -1 when malformed. */
static int parse_basic(const char *h, char **name, char **password)
{
    if (h == NULL || strncasecmp(h, "Basic ", 6) != 0)
        return -1;
    h += 6;
    while (*h == ' ')
        h++;
    size_t n = strlen(h), len = 0;
    while (n > 0 && h[n - 1] == ' ')
        n--;
    unsigned char buf[CRED_MAX];
    if (mlr_base64_decode(h, n, buf, sizeof(buf) - 1, &len) != MLR_OK)
        return -1;
    buf[len] = '\0';
    char *colon = memchr(buf, ':', len);
    if (colon == NULL || memchr(buf, '\0', len) != NULL || colon == (char *)buf) {
        OPENSSL_cleanse(buf, sizeof(buf));
        return -1;
    }
    *name = mlr_xstrndup((char *)buf, (size_t)(colon - (char *)buf));
    *password = mlr_xstrdup(colon + 1);
    OPENSSL_cleanse(buf, sizeof(buf));
    return 0;
}

/* Whether @password is the one cached for user @name (the fast path: one short digest). */
static int cache_hit(const struct api_auth *a, const char *name, const char *password)
{
    struct json_object *hit = json_object_object_get(a->cache, name);
    if (hit == NULL || json_object_object_get(a->users, name) == NULL)
        return 0;
    char token[2 * TOKEN_LEN + 1];
    token_of(a, password, token);
    return CRYPTO_memcmp(token, json_object_get_string(hit), 2 * TOKEN_LEN) == 0;
}

int api_auth_precheck(struct api_auth *a, struct api_req *req)
{
    char *name = NULL, *password = NULL;
    if (parse_basic(api_header(req, "authorization"), &name, &password) != 0)
        return 401;
    int hit = cache_hit(a, name, password);
    if (hit) /* authenticated already: the dispatcher need not look at the header again */
        set_user(req, name, json_object_object_get(a->users, name));
    OPENSSL_cleanse(password, strlen(password));
    free(password);
    free(name);
    return hit || fail_slot(a, req->client)->count < FAIL_MAX ? 0 : 429;
}

void api_auth_check(struct api_auth *a, struct api_req *req)
{
    char *name = NULL, *password = NULL;
    if (parse_basic(api_header(req, "authorization"), &name, &password) != 0) {
        refuse(req, 401, "Unauthorized");
        return;
    }
    struct json_object *u = json_object_object_get(a->users, name);
    if (u) { /* the fast path: one short digest */
        if (cache_hit(a, name, password)) {
            set_user(req, name, u);
            OPENSSL_cleanse(password, strlen(password));
            free(password);
            free(name);
            api__dispatch_authenticated(req);
            return;
        }
    }
    struct fail_slot *f = fail_slot(a, req->client);
    if (f->count >= FAIL_MAX || a->nwaiting >= VERIFY_QUEUE_MAX) {
        OPENSSL_cleanse(password, strlen(password));
        free(password);
        free(name);
        refuse(req, 429, f->count >= FAIL_MAX ? "Too many failed logins from this address; try "
                                                "again later"
                                              : "Too many logins in progress; try again later");
        return;
    }
    struct verify *v = mlr_xcalloc(1, sizeof(*v));
    v->auth = a;
    v->req = req;
    v->name = name;
    v->password = password;
    v->stored = mlr_xstrdup(u ? json_object_get_string(json_object_object_get(u, "password_hash"))
                              : a->dummy_hash);
    if (a->verifying < VERIFY_MAX) {
        verify_start(a, v);
        return;
    }
    if (a->wait_tail)
        a->wait_tail->next = v;
    else
        a->wait_head = v;
    a->wait_tail = v;
    a->nwaiting++;
}

static void on_bootstrap_written(int status, void *data)
{
    UNUSED(data);
    if (status != MLR_OK && status != MLR_EEXIST)
        mlr_log(MLR_LOG_ERROR, "auth", "cannot store the admin user: %s", mlr_strerror(status));
}

int api_auth_bootstrap(struct api_auth *a, const char *password)
{
    if (password == NULL || *password == '\0' || api_auth_enabled(a))
        return MLR_OK;
    char *hash = NULL;
    int rc = mlr_password_hash(password, 0, &hash);
    if (rc != MLR_OK)
        return rc;
    struct store_user u = {.name = "admin", .password_hash = hash, .roles = "[\"all_access\"]"};
    rc = store_user_put(a->store, &u, 0, on_bootstrap_written, NULL);
    if (rc == MLR_OK) {
        /* In memory at once, so no request is served without authentication meanwhile; the
         * next poll reloads the users from the store. */
        struct json_object *users = json_object_new_object(), *admin = json_object_new_object(),
                           *roles = json_object_new_array();
        json_object_array_add(roles, json_object_new_string("all_access"));
        json_object_object_add(admin, "password_hash", json_object_new_string(hash));
        json_object_object_add(admin, "backend_roles", json_object_new_array());
        json_object_object_add(admin, "roles", roles); /* consumes roles */
        json_object_object_add(users, "admin", admin); /* consumes admin */
        install_users(a, users, a->version);
        json_object_put(users);
        mlr_log(MLR_LOG_INFO, "auth", "created user admin (role all_access) from "
                                      "MLRELAY_ADMIN_PASSWORD");
    }
    free(hash);
    return rc;
}
