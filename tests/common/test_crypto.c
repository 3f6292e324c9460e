/*
 * test_crypto.c — unit tests of common/crypto.c: sealing and opening secret values (round trips,
 * fresh nonces, authentication of key, context and every payload byte, format errors) and loading
 * the master key (creation, permissions, reuse, concurrent starters, the environment override,
 * malformed input). Base64 in these tests goes through OpenSSL's own codec, so the module's
 * encoder is checked against an independent implementation. Each test that touches the file
 * system works in its own mkdtemp directory under /tmp and removes it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common.h"

#define NONCE_LEN 12
#define TAG_LEN 16

static const unsigned char test_key[MLR_MASTER_KEY_LEN] = {
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f};

/* ---- helpers ---- */

/* Decodes padded standard base64 with OpenSSL; returns the byte count. @out needs n/4*3 bytes. */
static size_t b64_dec(const char *s, unsigned char *out)
{
    size_t n = strlen(s);
    int r = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n);
    assert_true(r >= 0);
    /* EVP_DecodeBlock counts the bytes the padding stands for; drop them. */
    if (n > 0 && s[n - 1] == '=')
        r--;
    if (n > 1 && s[n - 2] == '=')
        r--;
    return (size_t)r;
}

/* Returns a new heap string with @n bytes of @in in padded standard base64 (OpenSSL's encoder). */
static char *b64_enc(const unsigned char *in, size_t n)
{
    char *out = mlr_xmalloc((n + 2) / 3 * 4 + 1);
    EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    return out;
}

/* Returns a new heap string "v1:" + base64(@raw). */
static char *sealed_from_raw(const char *prefix, const unsigned char *raw, size_t n)
{
    char *b = b64_enc(raw, n);
    char *s = mlr_xasprintf("%s%s", prefix, b);
    free(b);
    return s;
}

/* Decodes the payload of a sealed value into a new buffer and sets *@n. */
static unsigned char *raw_from_sealed(const char *text, size_t *n)
{
    assert_memory_equal(text, "v1:", 3);
    unsigned char *raw = mlr_xmalloc(strlen(text) / 4 * 3 + 3);
    *n = b64_dec(text + 3, raw);
    return raw;
}

static void roundtrip(const char *aad, const char *plain, size_t len)
{
    char *text = NULL, *back = NULL;
    size_t backlen = 0;
    assert_int_equal(mlr_secret_encrypt(test_key, aad, plain, len, &text), MLR_OK);
    assert_non_null(text);
    assert_int_equal(strlen(text), 3 + (NONCE_LEN + len + TAG_LEN + 2) / 3 * 4);
    assert_int_equal(mlr_secret_decrypt(test_key, aad, text, &back, &backlen), MLR_OK);
    assert_int_equal(backlen, len);
    if (len > 0)
        assert_memory_equal(back, plain, len);
    assert_int_equal(back[len], '\0');
    mlr_secret_free(back, backlen);
    free(text);
}

/* Asserts that @text fails to decrypt with @want and that nothing was written. */
static void open_fails(const unsigned char *key, const char *aad, const char *text, int want)
{
    char *sentinel = (char *)&sentinel, *out = sentinel;
    size_t outlen = 12345;
    assert_int_equal(mlr_secret_decrypt(key, aad, text, &out, &outlen), want);
    assert_ptr_equal(out, sentinel);
    assert_int_equal(outlen, 12345);
}

static char *tmpdir_new(void)
{
    char *dir = mlr_xstrdup("/tmp/mlr-crypto-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return dir;
}

/* Removes @dir and everything in it (one level of subdirectories is enough here). */
static void tmpdir_free(char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    for (struct dirent *e = readdir(d); e != NULL; e = readdir(d)) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) != 0)
            assert_int_equal(unlinkat(dirfd(d), e->d_name, AT_REMOVEDIR), 0);
    }
    closedir(d);
    assert_int_equal(rmdir(dir), 0);
    free(dir);
}

static char *key_path(const char *dir)
{
    return mlr_xasprintf("%s/master.key", dir);
}

static void write_file(const char *path, const char *data, size_t n, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    assert_int_equal(fchmod(fd, mode), 0);
    assert_int_equal(close(fd), 0);
}

/* Reads a small file into a new NUL-terminated heap string. */
static char *read_file(const char *path)
{
    char *buf = mlr_xcalloc(1, 4096);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    ssize_t n = read(fd, buf, 4095);
    assert_true(n >= 0);
    close(fd);
    return buf;
}

static int count_entries(const char *dir)
{
    int n = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    for (struct dirent *e = readdir(d); e != NULL; e = readdir(d))
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

/* ---- sealing and opening ---- */

static void roundtrip_values(void **state)
{
    UNUSED(state);
    static const char utf8[] = "p\xc3\xa4ssw\xc3\xb6rd \xe2\x9c\x93 \xf0\x9f\x94\x91 \xe6\x97\xa5";
    roundtrip(NULL, "", 0);
    roundtrip("connector:abc:api_key", "", 0);
    roundtrip(NULL, NULL, 0);
    roundtrip("connector:abc:api_key", "sk-0123456789abcdef", 19);
    roundtrip("", "x", 1);
    roundtrip("ctx", utf8, strlen(utf8));
    roundtrip("ctx \xe2\x9c\x93", "ab\0cd\0", 6); /* embedded NULs, UTF-8 context */
    for (size_t len = 0; len < 70; len++)         /* every base64 padding case */
        roundtrip("len", "0123456789012345678901234567890123456789012345678901234567890123456789",
                  len);
}

static void roundtrip_one_megabyte(void **state)
{
    UNUSED(state);
    size_t len = (size_t)1 << 20;
    char *big = mlr_xmalloc(len);
    for (size_t i = 0; i < len; i++)
        big[i] = (char)(i * 131 % 251); /* includes NULs and high bytes */
    roundtrip("connector:big:blob", big, len);
    free(big);
}

static void nonce_is_fresh(void **state)
{
    UNUSED(state);
    char *a = NULL, *b = NULL;
    size_t na, nb;
    assert_int_equal(mlr_secret_encrypt(test_key, "c", "same value", 10, &a), MLR_OK);
    assert_int_equal(mlr_secret_encrypt(test_key, "c", "same value", 10, &b), MLR_OK);
    assert_string_not_equal(a, b);
    unsigned char *ra = raw_from_sealed(a, &na), *rb = raw_from_sealed(b, &nb);
    assert_int_equal(na, NONCE_LEN + 10 + TAG_LEN);
    assert_int_equal(nb, na);
    assert_memory_not_equal(ra, rb, NONCE_LEN);
    assert_memory_not_equal(ra + NONCE_LEN, rb + NONCE_LEN, 10);
    free(ra);
    free(rb);
    free(a);
    free(b);
}

static void ciphertext_hides_plaintext(void **state)
{
    UNUSED(state);
    static const char secret[] = "AKIAIOSFODNN7EXAMPLE-super-secret-api-key";
    char *text = NULL;
    size_t n;
    assert_int_equal(mlr_secret_encrypt(test_key, NULL, secret, strlen(secret), &text), MLR_OK);
    assert_null(strstr(text, secret));
    assert_null(strstr(text, "secret"));
    unsigned char *raw = raw_from_sealed(text, &n);
    assert_null(memmem(raw, n, secret, strlen(secret)));
    assert_null(memmem(raw, n, "secret", 6));
    char *b64 = b64_enc((const unsigned char *)secret, strlen(secret));
    assert_null(strstr(text, b64)); /* not merely base64 of the plaintext either */
    free(b64);
    free(raw);
    free(text);
}

static void wrong_key_is_eperm(void **state)
{
    UNUSED(state);
    unsigned char other[MLR_MASTER_KEY_LEN];
    char *text = NULL;
    assert_int_equal(mlr_secret_encrypt(test_key, "c", "value", 5, &text), MLR_OK);
    for (size_t i = 0; i < MLR_MASTER_KEY_LEN; i++) {
        memcpy(other, test_key, sizeof(other));
        other[i] ^= 0x01;
        open_fails(other, "c", text, MLR_EPERM);
    }
    memset(other, 0, sizeof(other));
    open_fails(other, "c", text, MLR_EPERM);
    free(text);
}

static void wrong_aad_is_eperm(void **state)
{
    UNUSED(state);
    char *text = NULL, *out = NULL;
    size_t n = 0;
    assert_int_equal(mlr_secret_encrypt(test_key, "connector:a:api_key", "v", 1, &text), MLR_OK);
    open_fails(test_key, "connector:b:api_key", text, MLR_EPERM);
    open_fails(test_key, "connector:a:secret", text, MLR_EPERM);
    open_fails(test_key, "connector:a:api_ke", text, MLR_EPERM);
    open_fails(test_key, "connector:a:api_key ", text, MLR_EPERM);
    open_fails(test_key, NULL, text, MLR_EPERM);
    open_fails(test_key, "", text, MLR_EPERM);
    free(text);
    /* Sealed without a context: only no context (NULL, or the same "") opens it. */
    assert_int_equal(mlr_secret_encrypt(test_key, NULL, "v", 1, &text), MLR_OK);
    open_fails(test_key, "x", text, MLR_EPERM);
    assert_int_equal(mlr_secret_decrypt(test_key, "", text, &out, &n), MLR_OK);
    assert_string_equal(out, "v");
    mlr_secret_free(out, n);
    free(text);
}

static void every_flipped_byte_is_rejected(void **state)
{
    UNUSED(state);
    static const unsigned char masks[] = {0x01, 0x80, 0xff};
    char *text = NULL;
    size_t n;
    assert_int_equal(mlr_secret_encrypt(test_key, "c", "a credential value", 18, &text), MLR_OK);
    unsigned char *raw = raw_from_sealed(text, &n);
    assert_int_equal(n, NONCE_LEN + 18 + TAG_LEN);
    for (size_t i = 0; i < n; i++) {
        for (size_t m = 0; m < sizeof(masks); m++) {
            raw[i] ^= masks[m];
            char *bad = sealed_from_raw("v1:", raw, n);
            open_fails(test_key, "c", bad, MLR_EPERM); /* same length, so authentication fails */
            free(bad);
            raw[i] ^= masks[m];
        }
    }
    /* Every single changed character of the text form fails too, one way or the other. */
    for (size_t i = 0; text[i] != '\0'; i++) {
        char *bad = mlr_xstrdup(text);
        bad[i] = bad[i] == 'A' ? 'B' : 'A';
        char *sentinel = (char *)&sentinel, *out = sentinel;
        int rc = mlr_secret_decrypt(test_key, "c", bad, &out, NULL);
        assert_true(rc == MLR_EPERM || rc == MLR_ECORRUPT);
        assert_ptr_equal(out, sentinel);
        free(bad);
    }
    free(raw);
    free(text);
}

static void malformed_input_is_ecorrupt(void **state)
{
    UNUSED(state);
    static const char *const garbage[] = {
        "",         "v1",           "v1:",     "hello",    "v1:abc",
        "v1:abcde", "v1:====",      "v1:A===", "v1:=AAA",  "v1:AA=A",
        "v1:****",  "v1:AAAA AAAA", "V1:AAAA", " v1:AAAA", "v1:-_-_"};
    for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++)
        open_fails(test_key, NULL, garbage[i], MLR_ECORRUPT);
    char *text = NULL;
    assert_int_equal(mlr_secret_encrypt(test_key, NULL, "value", 5, &text), MLR_OK);
    char *v2 = mlr_xasprintf("v2:%s", text + 3);
    char *nl = mlr_xasprintf("%s\n", text);
    char *bare = mlr_xstrdup(text + 3);
    open_fails(test_key, NULL, v2, MLR_ECORRUPT);
    open_fails(test_key, NULL, nl, MLR_ECORRUPT);
    open_fails(test_key, NULL, bare, MLR_ECORRUPT);
    free(v2);
    free(nl);
    free(bare);
    free(text);
}

/* Fills @buf (@n digits after "v1:") with 'A', puts @tail at the end and NUL-terminates. */
static void digits(char *buf, size_t n, const char *tail)
{
    memcpy(buf, "v1:", 3);
    memset(buf + 3, 'A', n);
    memcpy(buf + 3 + n - strlen(tail), tail, strlen(tail));
    buf[3 + n] = '\0';
}

static void short_or_noncanonical_base64_is_ecorrupt(void **state)
{
    UNUSED(state);
    char buf[3 + 40 + 1];
    digits(buf, 36, ""); /* 27 bytes: one short of nonce + tag */
    open_fails(test_key, NULL, buf, MLR_ECORRUPT);
    /* 28 and 29 bytes, but with non-zero pad bits: not canonical base64. */
    digits(buf, 40, "B==");
    open_fails(test_key, NULL, buf, MLR_ECORRUPT);
    digits(buf, 40, "B=");
    open_fails(test_key, NULL, buf, MLR_ECORRUPT);
    /* The canonical spellings get as far as authentication. */
    digits(buf, 40, "A==");
    open_fails(test_key, NULL, buf, MLR_EPERM);
    digits(buf, 40, "");
    open_fails(test_key, NULL, buf, MLR_EPERM);
}

static void truncated_input_is_rejected(void **state)
{
    UNUSED(state);
    char *text = NULL;
    assert_int_equal(mlr_secret_encrypt(test_key, NULL, "value", 5, &text), MLR_OK);
    /* Bad base64 or too short is ECORRUPT; losing whole groups of 4 digits leaves a bad tag. */
    size_t len = strlen(text);
    for (size_t cut = 0; cut < len; cut++) {
        char *t = mlr_xstrndup(text, cut);
        size_t b64 = cut > 3 ? cut - 3 : 0;
        int corrupt = cut < 3 || b64 % 4 != 0 || b64 / 4 * 3 < NONCE_LEN + TAG_LEN;
        open_fails(test_key, NULL, t, corrupt ? MLR_ECORRUPT : MLR_EPERM);
        free(t);
    }
    free(text);
}

static void oversize_is_refused(void **state)
{
    UNUSED(state);
    char *text = (char *)&text, *big = mlr_xcalloc(1, MLR_SECRET_MAX_LEN + 2);
    assert_int_equal(mlr_secret_encrypt(test_key, NULL, big, MLR_SECRET_MAX_LEN + 1, &text),
                     MLR_ETOOBIG);
    assert_ptr_equal(text, (char *)&text);
    memset(big, 'a', MLR_SECRET_MAX_LEN + 1); /* a context one byte too long */
    assert_int_equal(mlr_secret_encrypt(test_key, big, "v", 1, &text), MLR_ETOOBIG);
    free(big);
    /* A text longer than any sealed value is not ours. */
    size_t n = 3 + (NONCE_LEN + MLR_SECRET_MAX_LEN + TAG_LEN + 2) / 3 * 4 + 4;
    char *huge = mlr_xmalloc(n + 1);
    memcpy(huge, "v1:", 3);
    memset(huge + 3, 'A', n - 3);
    huge[n] = '\0';
    open_fails(test_key, NULL, huge, MLR_ECORRUPT);
    free(huge);
}

static void secret_free_accepts_null(void **state)
{
    UNUSED(state);
    mlr_secret_free(NULL, 0);
    mlr_secret_free(NULL, 10);
    mlr_secret_free(mlr_xstrdup("secret"), 6);
}

/* ---- the master key ---- */

static void key_file_created_0600_and_reused(void **state)
{
    UNUSED(state);
    char *dir = tmpdir_new(), *path = key_path(dir);
    unsigned char k1[MLR_MASTER_KEY_LEN], k2[MLR_MASTER_KEY_LEN], raw[64];
    char err[256] = "";
    struct stat st;
    mode_t old = umask(022);
    assert_int_equal(mlr_master_key_load(dir, NULL, k1, err, sizeof(err)), MLR_OK);
    umask(old);
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    char *content = read_file(path);
    assert_int_equal(strlen(content), 45);
    assert_int_equal(content[44], '\n');
    content[44] = '\0';
    assert_int_equal(b64_dec(content, raw), MLR_MASTER_KEY_LEN);
    assert_memory_equal(raw, k1, MLR_MASTER_KEY_LEN);
    assert_int_equal(count_entries(dir), 1); /* no temporary file left behind */
    assert_int_equal(mlr_master_key_load(dir, "", k2, err, sizeof(err)), MLR_OK);
    assert_memory_equal(k1, k2, MLR_MASTER_KEY_LEN);
    /* A second data directory gets a different key. */
    char *dir2 = tmpdir_new();
    assert_int_equal(mlr_master_key_load(dir2, NULL, k2, err, sizeof(err)), MLR_OK);
    assert_memory_not_equal(k1, k2, MLR_MASTER_KEY_LEN);
    tmpdir_free(dir2);
    free(content);
    free(path);
    tmpdir_free(dir);
}

static void key_file_concurrent_starters_agree(void **state)
{
    UNUSED(state);
    enum { ROUNDS = 10, STARTERS = 8 };
    for (int r = 0; r < ROUNDS; r++) {
        char *dir = tmpdir_new();
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        for (int i = 0; i < STARTERS; i++) {
            pid_t pid = fork();
            assert_true(pid >= 0);
            if (pid == 0) {
                unsigned char k[MLR_MASTER_KEY_LEN];
                int ok = mlr_master_key_load(dir, NULL, k, NULL, 0) == MLR_OK;
                /* One write of 32 bytes (< PIPE_BUF) is atomic, so keys do not interleave. */
                ok = ok && write(fds[1], k, sizeof(k)) == (ssize_t)sizeof(k);
                _exit(ok ? 0 : 1);
            }
        }
        close(fds[1]);
        unsigned char keys[STARTERS][MLR_MASTER_KEY_LEN], mine[MLR_MASTER_KEY_LEN];
        for (int i = 0; i < STARTERS; i++) {
            int status = 0;
            assert_true(wait(&status) > 0);
            assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        }
        for (int i = 0; i < STARTERS; i++)
            assert_int_equal(read(fds[0], keys[i], MLR_MASTER_KEY_LEN), MLR_MASTER_KEY_LEN);
        close(fds[0]);
        assert_int_equal(mlr_master_key_load(dir, NULL, mine, NULL, 0), MLR_OK);
        for (int i = 0; i < STARTERS; i++)
            assert_memory_equal(keys[i], mine, MLR_MASTER_KEY_LEN);
        assert_int_equal(count_entries(dir), 1);
        tmpdir_free(dir);
    }
}

static void env_key_wins_over_file(void **state)
{
    UNUSED(state);
    char *dir = tmpdir_new(), *path = key_path(dir);
    unsigned char file_key[MLR_MASTER_KEY_LEN], env_key[MLR_MASTER_KEY_LEN], k[MLR_MASTER_KEY_LEN];
    char err[256] = "";
    /* With only the environment, no file is created. */
    for (size_t i = 0; i < sizeof(env_key); i++)
        env_key[i] = (unsigned char)(0xa0 + i);
    char *env = b64_enc(env_key, sizeof(env_key));
    assert_int_equal(mlr_master_key_load(dir, env, k, err, sizeof(err)), MLR_OK);
    assert_memory_equal(k, env_key, sizeof(k));
    assert_int_equal(count_entries(dir), 0);
    /* With a file too, the environment still wins and the file is left alone. */
    assert_int_equal(mlr_master_key_load(dir, NULL, file_key, err, sizeof(err)), MLR_OK);
    assert_memory_not_equal(file_key, env_key, sizeof(k));
    char *before = read_file(path);
    char *env_nl = mlr_xasprintf("%s\n", env); /* trailing newline, as from $(cat file) */
    assert_int_equal(mlr_master_key_load(dir, env_nl, k, err, sizeof(err)), MLR_OK);
    assert_memory_equal(k, env_key, sizeof(k));
    char *after = read_file(path);
    assert_string_equal(before, after);
    free(before);
    free(after);
    free(env_nl);
    free(env);
    free(path);
    tmpdir_free(dir);
}

static void bad_env_key_is_refused(void **state)
{
    UNUSED(state);
    unsigned char bytes[48];
    for (size_t i = 0; i < sizeof(bytes); i++)
        bytes[i] = (unsigned char)(i * 7 + 1);
    char *b31 = b64_enc(bytes, 31), *b33 = b64_enc(bytes, 33), *b16 = b64_enc(bytes, 16);
    char *b48 = b64_enc(bytes, 48), *b32 = b64_enc(bytes, 32);
    char *star = mlr_xstrdup(b32), *urlsafe = mlr_xstrdup(b32), *spaced = mlr_xasprintf(" %s", b32);
    star[5] = '*';
    urlsafe[3] = '-'; /* URL-safe alphabet is not standard base64 */
    const char *bad[] = {
        b31, b33, b16, b48, star, urlsafe, spaced, "not base64 at all!!", "hunter2hunter2", "===="};
    char *dir = tmpdir_new();
    unsigned char k[MLR_MASTER_KEY_LEN], untouched[MLR_MASTER_KEY_LEN];
    assert_int_equal(mlr_master_key_load(dir, NULL, k, NULL, 0), MLR_OK); /* a valid file exists */
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[512] = "";
        memset(k, 0x5a, sizeof(k));
        memset(untouched, 0x5a, sizeof(untouched));
        assert_int_equal(mlr_master_key_load(dir, bad[i], k, err, sizeof(err)), MLR_EINVAL);
        assert_memory_equal(k, untouched, sizeof(k)); /* no fallback to the file either */
        assert_non_null(strstr(err, "MLRELAY_MASTER_KEY"));
        assert_null(strstr(err, bad[i]));
        assert_null(strstr(err, "hunter2"));
    }
    assert_int_equal(mlr_master_key_load(dir, b31, k, NULL, 0), MLR_EINVAL); /* NULL err is fine */
    tmpdir_free(dir);
    free(b31);
    free(b33);
    free(b16);
    free(b48);
    free(b32);
    free(star);
    free(urlsafe);
    free(spaced);
}

/* Writes @len bytes of @data as the key file in @dir and expects MLR_ECORRUPT naming the file. */
static void key_file_refused(const char *dir, const char *data, size_t len)
{
    char err[512] = "", *path = key_path(dir);
    unsigned char k[MLR_MASTER_KEY_LEN], untouched[MLR_MASTER_KEY_LEN];
    memset(k, 0x5a, sizeof(k));
    memset(untouched, 0x5a, sizeof(untouched));
    if (data != NULL)
        write_file(path, data, len, 0600);
    assert_int_equal(mlr_master_key_load(dir, NULL, k, err, sizeof(err)), MLR_ECORRUPT);
    assert_memory_equal(k, untouched, sizeof(k));
    assert_non_null(strstr(err, path));
    free(path);
}

static void malformed_key_file_is_ecorrupt(void **state)
{
    UNUSED(state);
    unsigned char bytes[33] = {1, 2, 3};
    char *b31 = b64_enc(bytes, 31), *b33 = b64_enc(bytes, 33), *b32 = b64_enc(bytes, 32);
    char *junk = mlr_xasprintf("%s junk\n", b32), *twice = mlr_xasprintf("%s\n%s\n", b32, b32);
    char *big = mlr_xmalloc(2000), *dir = tmpdir_new();
    memset(big, 'A', 2000);
    key_file_refused(dir, "", 0);
    key_file_refused(dir, "hello\n", 6);
    key_file_refused(dir, b31, strlen(b31));
    key_file_refused(dir, b33, strlen(b33));
    key_file_refused(dir, junk, strlen(junk));
    key_file_refused(dir, twice, strlen(twice));
    key_file_refused(dir, big, 2000);
    key_file_refused(dir, "\0\0\0\0", 4);
    /* A directory where the file should be is refused, not replaced. */
    char *path = key_path(dir);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(mkdir(path, 0700), 0);
    key_file_refused(dir, NULL, 0);
    free(path);
    tmpdir_free(dir);
    free(b31);
    free(b33);
    free(b32);
    free(junk);
    free(twice);
    free(big);
}

/* Runs a key load with stderr captured; returns the captured log text (heap). */
static char *load_capturing_log(const char *dir, unsigned char k[MLR_MASTER_KEY_LEN], int *rc)
{
    int fds[2], saved = dup(2);
    char *buf = mlr_xcalloc(1, 8192);
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(dup2(fds[1], 2), 2);
    close(fds[1]);
    *rc = mlr_master_key_load(dir, NULL, k, NULL, 0);
    assert_int_equal(dup2(saved, 2), 2);
    close(saved);
    ssize_t n = read(fds[0], buf, 8191); /* the write ends are closed: EOF, never a hang */
    assert_true(n >= 0);
    close(fds[0]);
    return buf;
}

static void hand_written_key_file_loads_and_loose_mode_warns(void **state)
{
    UNUSED(state);
    unsigned char want[MLR_MASTER_KEY_LEN], k[MLR_MASTER_KEY_LEN];
    for (size_t i = 0; i < sizeof(want); i++)
        want[i] = (unsigned char)(255 - i);
    char *b64 = b64_enc(want, sizeof(want)), *text = mlr_xasprintf("%s\r\n", b64);
    char *dir = tmpdir_new(), *path = key_path(dir);
    int rc;
    write_file(path, text, strlen(text), 0644);
    char *log = load_capturing_log(dir, k, &rc);
    assert_int_equal(rc, MLR_OK);
    assert_memory_equal(k, want, sizeof(k));
    assert_non_null(strstr(log, path));
    assert_non_null(strstr(log, "chmod 600"));
    assert_null(strstr(log, b64)); /* the key itself is never logged */
    free(log);
    assert_int_equal(chmod(path, 0600), 0);
    log = load_capturing_log(dir, k, &rc);
    assert_int_equal(rc, MLR_OK);
    assert_null(strstr(log, "chmod"));
    free(log);
    free(path);
    free(text);
    free(b64);
    tmpdir_free(dir);
}

static void missing_data_dir_is_eio(void **state)
{
    UNUSED(state);
    char *dir = tmpdir_new(), *gone = mlr_xasprintf("%s/missing", dir);
    char err[512] = "";
    unsigned char k[MLR_MASTER_KEY_LEN];
    assert_int_equal(mlr_master_key_load(gone, NULL, k, err, sizeof(err)), MLR_EIO);
    assert_non_null(strstr(err, gone));
    free(gone);
    tmpdir_free(dir);
}

static void loaded_key_seals_across_loads(void **state)
{
    UNUSED(state);
    char *dir = tmpdir_new(), *text = NULL, *out = NULL;
    unsigned char k1[MLR_MASTER_KEY_LEN], k2[MLR_MASTER_KEY_LEN];
    size_t n = 0;
    assert_int_equal(mlr_master_key_load(dir, NULL, k1, NULL, 0), MLR_OK);
    assert_int_equal(mlr_secret_encrypt(k1, "connector:x:key", "s3cr3t", 6, &text), MLR_OK);
    assert_int_equal(mlr_master_key_load(dir, NULL, k2, NULL, 0), MLR_OK); /* "restart" */
    assert_int_equal(mlr_secret_decrypt(k2, "connector:x:key", text, &out, &n), MLR_OK);
    assert_string_equal(out, "s3cr3t");
    mlr_secret_free(out, n);
    free(text);
    tmpdir_free(dir);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(roundtrip_values),
        cmocka_unit_test(roundtrip_one_megabyte),
        cmocka_unit_test(nonce_is_fresh),
        cmocka_unit_test(ciphertext_hides_plaintext),
        cmocka_unit_test(wrong_key_is_eperm),
        cmocka_unit_test(wrong_aad_is_eperm),
        cmocka_unit_test(every_flipped_byte_is_rejected),
        cmocka_unit_test(malformed_input_is_ecorrupt),
        cmocka_unit_test(short_or_noncanonical_base64_is_ecorrupt),
        cmocka_unit_test(truncated_input_is_rejected),
        cmocka_unit_test(oversize_is_refused),
        cmocka_unit_test(secret_free_accepts_null),
        cmocka_unit_test(key_file_created_0600_and_reused),
        cmocka_unit_test(key_file_concurrent_starters_agree),
        cmocka_unit_test(env_key_wins_over_file),
        cmocka_unit_test(bad_env_key_is_refused),
        cmocka_unit_test(malformed_key_file_is_ecorrupt),
        cmocka_unit_test(hand_written_key_file_loads_and_loose_mode_warns),
        cmocka_unit_test(missing_data_dir_is_eio),
        cmocka_unit_test(loaded_key_seals_across_loads),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
