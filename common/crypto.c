/*
 * crypto.c — credentials at rest: loading (or creating) the master key, and sealing each secret
 * value with AES-256-GCM through OpenSSL EVP.
 *
 * Format. A sealed value is the text "v1:" followed by standard padded base64 of
 * nonce (12 bytes) || ciphertext (as long as the plaintext) || GCM tag (16 bytes). The nonce comes
 * fresh from the OpenSSL CSPRNG on every call; with random 96-bit nonces one key may seal about
 * 2^32 values before the collision risk matters, far beyond what a relay stores. The prefix names
 * the format so a later one can coexist; decrypt refuses anything that is not "v1:".
 *
 * Associated data. GCM authenticates, without encrypting, the constant label "mlrelay-secret-v1",
 * a NUL byte, and then the caller's context string (NULL counts as ""). The label binds the
 * ciphertext to this format version. The context binds it to its place (the caller passes e.g.
 * "connector:<id>:<credential key>"), so a ciphertext copied into another connector or under
 * another credential key fails to authenticate. The context is not stored in the output: the
 * caller rebuilds it at decrypt time. Because the label has a fixed length, label and context
 * cannot be confused with one another.
 *
 * Invariants. Decrypt never hands out unauthenticated bytes: the plaintext is produced in a private
 * buffer that is wiped and freed unless the tag verifies. Base64 decoding is strict (length a
 * multiple of 4, padding only at the end, zero pad bits, no whitespace), so each sealed value has
 * exactly one text form. Key bytes and plaintext copies made here are wiped with OPENSSL_cleanse()
 * before their memory is released; the EVP context wipes its own key schedule when freed.
 *
 * Master key file. <data_dir>/master.key holds the base64 key and a newline. It is created by
 * writing a uniquely named temporary file (O_CREAT|O_EXCL, mode 0600, fsync) and then link(2)-ing
 * it to master.key. Like O_EXCL, link() fails with EEXIST rather than replace a key another
 * starter already published; the loser then reads the winner's file. Unlike opening master.key
 * itself with O_EXCL, the name only appears once its content is complete and durable, so a
 * concurrent reader never sees a half-written key and a crash never leaves an empty master.key
 * that would block every later start (at worst a stray temporary file remains). The directory is
 * fsynced after the link.
 *
 * Threading: there are no globals, so every function may be called from any thread (key loading
 * is also safe across processes, as above). Costs: sealing or opening is O(n) in the value plus
 * one EVP context; loading the key is a few syscalls, plus two fsyncs when the file is created.
 */
#include "common.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define NONCE_LEN 12
#define TAG_LEN 16
#define PREFIX "v1:"
#define PREFIX_LEN 3
#define AAD_LABEL "mlrelay-secret-v1" /* sizeof() includes the NUL that separates the context */
#define KEY_FILE "master.key"
#define KEY_B64_LEN 44    /* characters of padded base64 for MLR_MASTER_KEY_LEN bytes */
#define KEY_FILE_MAX 1024 /* bytes; a well-formed key file has 45 */
#define CREATE_ATTEMPTS 5 /* read/create rounds before giving up on a file that comes and goes */

/* ------------------------------------------------------------------------------------------ */
/* Base64 (standard alphabet, padded, strict)                                                  */
/* ------------------------------------------------------------------------------------------ */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64_encoded_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

/* Writes b64_encoded_len(@n) characters and a NUL to @out. */
static void b64_encode(const unsigned char *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = b64_alphabet[(v >> 18) & 63];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = i + 1 < n ? b64_alphabet[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? b64_alphabet[v & 63] : '=';
    }
    out[o] = '\0';
}

/* Returns the value of one base64 digit, or -1 for any other character (including '='). */
static int b64_digit(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/*
 * Decodes @n characters of canonical padded base64 into @out, which has room for n / 4 * 3 bytes,
 * and sets *@outlen. Returns MLR_OK or MLR_ECORRUPT (bad length, stray character or padding,
 * non-zero pad bits); @out may hold partial output on failure.
 */
static int b64_decode(const char *s, size_t n, unsigned char *out, size_t *outlen)
{
    size_t pad = 0, o = 0;
    if (n % 4 != 0)
        return MLR_ECORRUPT;
    if (n > 0 && s[n - 1] == '=')
        pad++;
    if (n > 1 && s[n - 2] == '=')
        pad++;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        for (size_t j = i; j < i + 4; j++) {
            int d = j >= n - pad ? 0 : b64_digit((unsigned char)s[j]);
            if (d < 0)
                return MLR_ECORRUPT;
            v = v << 6 | (uint32_t)d;
        }
        out[o++] = (unsigned char)(v >> 16);
        out[o++] = (unsigned char)(v >> 8);
        out[o++] = (unsigned char)v;
    }
    /* The bytes the padding drops must be zero, or two texts would decode to the same value. */
    for (size_t k = o - pad; k < o; k++) {
        if (out[k] != 0)
            return MLR_ECORRUPT;
    }
    *outlen = o - pad;
    return MLR_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* AES-256-GCM                                                                                 */
/* ------------------------------------------------------------------------------------------ */

/* Returns a GCM context keyed with @key and @nonce, encrypting when @enc is 1; NULL on failure. */
static EVP_CIPHER_CTX *gcm_new(const unsigned char *key, const unsigned char *nonce, int enc)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL)
        return NULL;
    if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) != 1 ||
        EVP_CipherInit_ex(ctx, NULL, NULL, key, nonce, enc) != 1) {
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Feeds the associated data (label, NUL, context) into @ctx; the caller capped strlen(@aad). */
static int gcm_aad(EVP_CIPHER_CTX *ctx, const char *aad)
{
    int n;
    size_t alen = aad != NULL ? strlen(aad) : 0;
    if (EVP_CipherUpdate(ctx, NULL, &n, (const unsigned char *)AAD_LABEL, (int)sizeof(AAD_LABEL)) !=
        1)
        return MLR_EINTERNAL;
    if (alen > 0 && EVP_CipherUpdate(ctx, NULL, &n, (const unsigned char *)aad, (int)alen) != 1)
        return MLR_EINTERNAL;
    return MLR_OK;
}

/* Encrypts @len bytes of @plain into @ct (same length) and writes the tag to @tag. */
static int gcm_seal(const unsigned char *key, const char *aad, const unsigned char *nonce,
                    const unsigned char *plain, size_t len, unsigned char *ct, unsigned char *tag)
{
    int rc = MLR_EINTERNAL, n = 0;
    unsigned char
        fin[16]; /* GCM emits nothing at final; this only gives OpenSSL a place to do so */
    EVP_CIPHER_CTX *ctx = gcm_new(key, nonce, 1);
    if (ctx == NULL || gcm_aad(ctx, aad) != MLR_OK)
        goto out;
    if (len > 0 && (EVP_CipherUpdate(ctx, ct, &n, plain, (int)len) != 1 || (size_t)n != len))
        goto out;
    if (EVP_CipherFinal_ex(ctx, fin, &n) != 1 || n != 0)
        goto out;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag) != 1)
        goto out;
    rc = MLR_OK;
out:
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

/*
 * Decrypts @len bytes of @ct into @plain and checks @tag. Returns MLR_OK, MLR_EPERM when the tag
 * does not verify (then @plain holds unauthenticated bytes the caller must wipe) or MLR_EINTERNAL.
 */
static int gcm_open(const unsigned char *key, const char *aad, const unsigned char *nonce,
                    const unsigned char *ct, size_t len, unsigned char *tag, unsigned char *plain)
{
    int rc = MLR_EINTERNAL, n = 0;
    unsigned char fin[16];
    EVP_CIPHER_CTX *ctx = gcm_new(key, nonce, 0);
    if (ctx == NULL || gcm_aad(ctx, aad) != MLR_OK)
        goto out;
    if (len > 0 && (EVP_CipherUpdate(ctx, plain, &n, ct, (int)len) != 1 || (size_t)n != len))
        goto out;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag) != 1)
        goto out;
    rc = EVP_CipherFinal_ex(ctx, fin, &n) == 1 ? MLR_OK : MLR_EPERM;
out:
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

int mlr_secret_encrypt(const unsigned char key[MLR_MASTER_KEY_LEN], const char *aad,
                       const char *plain, size_t len, char **out)
{
    assert(key != NULL && out != NULL && (plain != NULL || len == 0));
    int rc = MLR_EIO;
    size_t rawlen = NONCE_LEN + len + TAG_LEN;
    unsigned char *raw = NULL;
    char *text;
    if (len > MLR_SECRET_MAX_LEN ||
        (aad != NULL && strnlen(aad, MLR_SECRET_MAX_LEN + 1) > MLR_SECRET_MAX_LEN))
        return MLR_ETOOBIG;
    raw = mlr_xmalloc(rawlen);
    if (RAND_bytes(raw, NONCE_LEN) != 1)
        goto out;
    rc = gcm_seal(key, aad, raw, (const unsigned char *)plain, len, raw + NONCE_LEN,
                  raw + NONCE_LEN + len);
    if (rc != MLR_OK)
        goto out;
    text = mlr_xmalloc(PREFIX_LEN + b64_encoded_len(rawlen) + 1);
    memcpy(text, PREFIX, PREFIX_LEN);
    b64_encode(raw, rawlen, text + PREFIX_LEN);
    *out = text;
out:
    free(raw); /* nonce, ciphertext and tag: nothing secret */
    return rc;
}

int mlr_secret_decrypt(const unsigned char key[MLR_MASTER_KEY_LEN], const char *aad,
                       const char *text, char **out, size_t *outlen)
{
    assert(key != NULL && text != NULL && out != NULL);
    const size_t max_b64 = b64_encoded_len(NONCE_LEN + MLR_SECRET_MAX_LEN + TAG_LEN);
    int rc = MLR_ECORRUPT;
    unsigned char *raw = NULL;
    char *plain = NULL;
    size_t n, rawlen = 0, len = 0;
    if (strncmp(text, PREFIX, PREFIX_LEN) != 0)
        goto out;
    n = strnlen(text + PREFIX_LEN, max_b64 + 1);
    if (n > max_b64)
        goto out;
    raw = mlr_xmalloc(n / 4 * 3 + 1); /* + 1: never a zero-byte allocation */
    if (b64_decode(text + PREFIX_LEN, n, raw, &rawlen) != MLR_OK || rawlen < NONCE_LEN + TAG_LEN)
        goto out;
    /* No context longer than encrypt accepts can have been used to seal: it cannot authenticate. */
    rc = MLR_EPERM;
    if (aad != NULL && strnlen(aad, MLR_SECRET_MAX_LEN + 1) > MLR_SECRET_MAX_LEN)
        goto out;
    len = rawlen - NONCE_LEN - TAG_LEN;
    plain = mlr_xmalloc(len + 1);
    rc = gcm_open(key, aad, raw, raw + NONCE_LEN, len, raw + NONCE_LEN + len,
                  (unsigned char *)plain);
    if (rc != MLR_OK)
        goto out;
    plain[len] = '\0';
    *out = plain;
    if (outlen != NULL)
        *outlen = len;
    plain = NULL; /* the caller owns the plaintext now */
out:
    mlr_secret_free(plain, len);
    free(raw);
    return rc;
}

void mlr_secret_free(char *p, size_t len)
{
    if (p == NULL)
        return;
    OPENSSL_cleanse(p, len);
    free(p);
}

/* ------------------------------------------------------------------------------------------ */
/* Master key                                                                                  */
/* ------------------------------------------------------------------------------------------ */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Maps a file-system errno to our error space. */
static int err_from_errno(int e)
{
    return e == ENOSPC || e == EDQUOT ? MLR_ENOSPC : MLR_EIO;
}

/* Decodes a base64 key of @n characters (trailing whitespace ignored) into @key, on success only.
 */
static int key_decode(const char *s, size_t n, unsigned char key[MLR_MASTER_KEY_LEN])
{
    unsigned char tmp[KEY_B64_LEN / 4 * 3];
    size_t len = 0;
    int rc = MLR_ECORRUPT;
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n == KEY_B64_LEN && b64_decode(s, n, tmp, &len) == MLR_OK && len == MLR_MASTER_KEY_LEN) {
        memcpy(key, tmp, MLR_MASTER_KEY_LEN);
        rc = MLR_OK;
    }
    OPENSSL_cleanse(tmp, sizeof(tmp));
    return rc;
}

static int key_from_env(const char *b64, unsigned char key[MLR_MASTER_KEY_LEN], char *err,
                        size_t errlen)
{
    if (key_decode(b64, strlen(b64), key) == MLR_OK)
        return MLR_OK;
    /* The message must not echo the value: a near-miss key is still a secret. */
    set_err(err, errlen,
            "MLRELAY_MASTER_KEY is invalid: it must be the standard base64 encoding of exactly %d "
            "bytes (%d characters, e.g. the output of `openssl rand -base64 32`)",
            MLR_MASTER_KEY_LEN, KEY_B64_LEN);
    return MLR_EINVAL;
}

/* Reads up to @cap bytes from @fd into @buf. Returns the count, or -1 with errno set. */
static ssize_t read_all(int fd, char *buf, size_t cap)
{
    size_t got = 0;
    while (got < cap) {
        ssize_t n = read(fd, buf + got, cap - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

/* Writes all @n bytes of @buf to @fd. Returns 0, or -1 with errno set. */
static int write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Checks what fstat() found at @path; warns when group or others have any access. */
static int key_file_check(const char *path, const struct stat *st, char *err, size_t errlen)
{
    if (!S_ISREG(st->st_mode) || st->st_size > KEY_FILE_MAX) {
        set_err(err, errlen, "%s is not a master key file (expected a small regular file)", path);
        return MLR_ECORRUPT;
    }
    if ((st->st_mode & (S_IRWXG | S_IRWXO)) != 0)
        mlr_log(MLR_LOG_WARN, "crypto",
                "%s is accessible by group or others (mode %03o); restrict it with chmod 600", path,
                (unsigned)(st->st_mode & 0777));
    return MLR_OK;
}

/*
 * Reads KEY_FILE in @dirfd (shown as @path in messages) into @key. Returns MLR_OK, MLR_ENOTFOUND
 * when it does not exist (no message), MLR_ECORRUPT or MLR_EIO.
 */
/* Reads key file @name (in @dirfd; @path for messages). MLR_ENOTFOUND when it does not exist. */
static int key_file_read(int dirfd, const char *name, const char *path,
                         unsigned char key[MLR_MASTER_KEY_LEN], char *err, size_t errlen)
{
    char text[KEY_FILE_MAX + 1], ebuf[128];
    struct stat st;
    ssize_t n;
    int rc = MLR_EIO;
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0 && errno == ENOENT)
        return MLR_ENOTFOUND;
    if (fd < 0) {
        set_err(err, errlen, "cannot open %s: %s", path, strerror_r(errno, ebuf, sizeof(ebuf)));
        return MLR_EIO;
    }
    if (fstat(fd, &st) != 0) {
        set_err(err, errlen, "cannot stat %s: %s", path, strerror_r(errno, ebuf, sizeof(ebuf)));
        goto out;
    }
    rc = key_file_check(path, &st, err, errlen);
    if (rc != MLR_OK)
        goto out;
    n = read_all(fd, text, sizeof(text));
    if (n < 0) {
        rc = MLR_EIO;
        set_err(err, errlen, "cannot read %s: %s", path, strerror_r(errno, ebuf, sizeof(ebuf)));
        goto out;
    }
    rc = key_decode(text, (size_t)n, key);
    if (rc != MLR_OK)
        set_err(err, errlen, "%s is malformed: expected the base64 encoding of exactly %d bytes",
                path, MLR_MASTER_KEY_LEN);
out:
    OPENSSL_cleanse(text, sizeof(text));
    close(fd);
    return rc;
}

/* Creates @tmp in @dirfd exclusively with mode 0600, writes @n bytes of @data and fsyncs it. */
static int temp_write(int dirfd, const char *tmp, const char *data, size_t n, const char *path,
                      char *err, size_t errlen)
{
    char ebuf[128];
    int ok, saved;
    int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        saved = errno;
        set_err(err, errlen, "cannot create %s: %s", path, strerror_r(saved, ebuf, sizeof(ebuf)));
        return err_from_errno(saved);
    }
    /* fchmod: the umask may have dropped bits from 0600, and the owner must be able to read. */
    ok = fchmod(fd, 0600) == 0 && write_all(fd, data, n) == 0 && fsync(fd) == 0;
    saved = errno;
    if (close(fd) != 0 && ok) {
        ok = 0;
        saved = errno;
    }
    if (ok)
        return MLR_OK;
    unlinkat(dirfd, tmp, 0);
    set_err(err, errlen, "cannot write %s: %s", path, strerror_r(saved, ebuf, sizeof(ebuf)));
    return err_from_errno(saved);
}

/*
 * Publishes the complete temporary file @tmp as KEY_FILE. Returns MLR_OK, MLR_EEXIST (no message)
 * when another starter published first, or an I/O error. @tmp is removed in every case.
 */
static int key_file_publish(int dirfd, const char *tmp, const char *path, char *err, size_t errlen)
{
    char ebuf[128];
    int rc = MLR_OK, saved = 0;
    if (linkat(dirfd, tmp, dirfd, KEY_FILE, 0) != 0) {
        saved = errno;
        rc = saved == EEXIST ? MLR_EEXIST : err_from_errno(saved);
    }
    unlinkat(dirfd, tmp, 0);
    if (rc != MLR_OK && rc != MLR_EEXIST)
        set_err(err, errlen, "cannot create %s: %s", path, strerror_r(saved, ebuf, sizeof(ebuf)));
    if (rc == MLR_OK && fsync(dirfd) != 0) {
        saved = errno;
        rc = err_from_errno(saved);
        set_err(err, errlen, "cannot fsync the directory of %s: %s", path,
                strerror_r(saved, ebuf, sizeof(ebuf)));
    }
    return rc;
}

/*
 * Creates KEY_FILE in @dirfd with a fresh random key and writes it to @key. Returns MLR_OK,
 * MLR_EEXIST when another starter won the race (then its file must be read), or an error.
 */
static int key_file_create(int dirfd, const char *path, unsigned char key[MLR_MASTER_KEY_LEN],
                           char *err, size_t errlen)
{
    unsigned char fresh[MLR_MASTER_KEY_LEN];
    char text[KEY_B64_LEN + 2], id[MLR_ID_LEN + 1], tmp[sizeof(KEY_FILE) + MLR_ID_LEN + 8];
    int rc = MLR_EIO;
    if (RAND_bytes(fresh, sizeof(fresh)) != 1 || mlr_id_new(id) != MLR_OK) {
        set_err(err, errlen, "cannot create %s: the OpenSSL CSPRNG failed", path);
        goto out;
    }
    b64_encode(fresh, sizeof(fresh), text);
    text[KEY_B64_LEN] = '\n';
    text[KEY_B64_LEN + 1] = '\0';
    snprintf(tmp, sizeof(tmp), "%s.%s.tmp", KEY_FILE, id);
    rc = temp_write(dirfd, tmp, text, KEY_B64_LEN + 1, path, err, errlen);
    if (rc == MLR_OK)
        rc = key_file_publish(dirfd, tmp, path, err, errlen);
    if (rc != MLR_OK)
        goto out;
    memcpy(key, fresh, MLR_MASTER_KEY_LEN);
    mlr_log(MLR_LOG_INFO, "crypto",
            "created a new master key in %s; back it up: stored credentials cannot be decrypted "
            "without it",
            path);
out:
    OPENSSL_cleanse(fresh, sizeof(fresh));
    OPENSSL_cleanse(text, sizeof(text));
    return rc;
}

int mlr_master_key_load(const char *data_dir, const char *env_b64,
                        unsigned char key[MLR_MASTER_KEY_LEN], char *err, size_t errlen)
{
    assert(key != NULL);
    if (env_b64 != NULL && env_b64[0] != '\0')
        return key_from_env(env_b64, key, err, errlen);
    assert(data_dir != NULL);
    char ebuf[128];
    char *path = mlr_xasprintf("%s/%s", data_dir, KEY_FILE);
    int rc = MLR_EIO;
    int dirfd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        set_err(err, errlen, "cannot open the data directory %s: %s", data_dir,
                strerror_r(errno, ebuf, sizeof(ebuf)));
        goto out;
    }
    for (int i = 0; i < CREATE_ATTEMPTS; i++) {
        rc = key_file_read(dirfd, KEY_FILE, path, key, err, errlen);
        if (rc == MLR_ENOTFOUND)
            rc = key_file_create(dirfd, path, key, err, errlen);
        if (rc != MLR_EEXIST)
            break;
        /* Another starter published its key between our read and our link: read that one. */
    }
    if (rc == MLR_EEXIST) {
        set_err(err, errlen, "%s keeps appearing and disappearing; is something deleting it?",
                path);
        rc = MLR_EIO;
    }
out:
    if (dirfd >= 0)
        close(dirfd);
    free(path);
    return rc;
}

/* ---------------------------------- passwords ---------------------------------- */

/*
 * Passwords are stored as "pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>": PBKDF2-HMAC-SHA256
 * (OpenSSL), a 16-byte random salt per password and a 32-byte derived key. The iteration count
 * is part of the string so it can be raised later without invalidating stored hashes. At
 * 600,000 iterations one check costs a few hundred milliseconds of CPU: callers run it off the
 * loop and cache what they verified.
 */
#define PW_SALT_LEN 16
#define PW_HASH_LEN 32
#define PW_SCHEME "pbkdf2_sha256"

static int pw_derive(const char *password, const unsigned char *salt, size_t saltlen, int iter,
                     unsigned char out[PW_HASH_LEN])
{
    return PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)saltlen, iter,
                             EVP_sha256(), PW_HASH_LEN, out) == 1
               ? MLR_OK
               : MLR_EINTERNAL;
}

int mlr_password_hash(const char *password, int iterations, char **out)
{
    unsigned char salt[PW_SALT_LEN], hash[PW_HASH_LEN];
    if (iterations <= 0)
        iterations = MLR_PASSWORD_ITERATIONS;
    if (RAND_bytes(salt, sizeof(salt)) != 1)
        return MLR_EINTERNAL;
    int rc = pw_derive(password, salt, sizeof(salt), iterations, hash);
    if (rc != MLR_OK)
        return rc;
    char s64[64], h64[64];
    b64_encode(salt, sizeof(salt), s64);
    b64_encode(hash, sizeof(hash), h64);
    OPENSSL_cleanse(hash, sizeof(hash));
    *out = mlr_xasprintf(PW_SCHEME "$%d$%s$%s", iterations, s64, h64);
    return MLR_OK;
}

int mlr_password_verify(const char *password, const char *stored)
{
    char scheme[32];
    int iter = 0, n = 0;
    if (stored == NULL || sscanf(stored, "%31[^$]$%d$%n", scheme, &iter, &n) != 2 || n == 0 ||
        strcmp(scheme, PW_SCHEME) != 0 || iter <= 0 || iter > 100000000)
        return MLR_EINVAL;
    const char *salt64 = stored + n, *dollar = strchr(salt64, '$');
    unsigned char salt[64], want[64], got[PW_HASH_LEN];
    size_t saltlen = 0, wantlen = 0;
    if (dollar == NULL || (size_t)(dollar - salt64) > 80 || strlen(dollar + 1) > 80 ||
        b64_decode(salt64, (size_t)(dollar - salt64), salt, &saltlen) != MLR_OK ||
        b64_decode(dollar + 1, strlen(dollar + 1), want, &wantlen) != MLR_OK ||
        wantlen != PW_HASH_LEN)
        return MLR_EINVAL;
    int rc = pw_derive(password, salt, saltlen, iter, got);
    if (rc == MLR_OK && CRYPTO_memcmp(got, want, PW_HASH_LEN) != 0)
        rc = MLR_EPERM;
    OPENSSL_cleanse(got, sizeof(got));
    return rc;
}

int mlr_base64_decode(const char *s, size_t n, unsigned char *out, size_t cap, size_t *outlen)
{
    if (n / 4 * 3 > cap)
        return MLR_ETOOBIG;
    return b64_decode(s, n, out, outlen) == MLR_OK ? MLR_OK : MLR_EINVAL;
}

/* ---------------------------------- key rotation ---------------------------------- */

/*
 * A rotation writes the new key to KEY_FILE ".new" before the database switches to it, and
 * renames it over KEY_FILE after: a crash in between leaves both files, and the next start picks
 * the one that opens the database's check value (mlr_master_key_recover()).
 */
#define KEY_FILE_NEW KEY_FILE ".new"

int mlr_master_key_new(unsigned char key[MLR_MASTER_KEY_LEN])
{
    return RAND_bytes(key, MLR_MASTER_KEY_LEN) == 1 ? MLR_OK : MLR_EIO;
}

void mlr_master_key_encode(const unsigned char key[MLR_MASTER_KEY_LEN],
                           char out[MLR_MASTER_KEY_B64 + 1])
{
    b64_encode(key, MLR_MASTER_KEY_LEN, out);
}

int mlr_master_key_stage(const char *data_dir, const unsigned char key[MLR_MASTER_KEY_LEN],
                         char *err, size_t errlen)
{
    char text[KEY_B64_LEN + 2], ebuf[128];
    char *path = mlr_xasprintf("%s/%s", data_dir, KEY_FILE_NEW);
    int rc = MLR_EIO, dirfd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        set_err(err, errlen, "cannot open the data directory %s: %s", data_dir,
                strerror_r(errno, ebuf, sizeof(ebuf)));
        goto out;
    }
    unlinkat(dirfd, KEY_FILE_NEW, 0); /* a stale one from an earlier, failed rotation */
    b64_encode(key, MLR_MASTER_KEY_LEN, text);
    text[KEY_B64_LEN] = '\n';
    text[KEY_B64_LEN + 1] = '\0';
    rc = temp_write(dirfd, KEY_FILE_NEW, text, KEY_B64_LEN + 1, path, err, errlen);
    if (rc == MLR_OK && fsync(dirfd) != 0) {
        set_err(err, errlen, "cannot fsync %s: %s", data_dir, strerror_r(errno, ebuf,
                                                                          sizeof(ebuf)));
        rc = MLR_EIO;
    }
out:
    OPENSSL_cleanse(text, sizeof(text));
    if (dirfd >= 0)
        close(dirfd);
    free(path);
    return rc;
}

int mlr_master_key_commit(const char *data_dir, int keep, char *err, size_t errlen)
{
    char ebuf[128];
    int rc = MLR_OK, dirfd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        set_err(err, errlen, "cannot open the data directory %s: %s", data_dir,
                strerror_r(errno, ebuf, sizeof(ebuf)));
        return MLR_EIO;
    }
    int moved = keep ? renameat(dirfd, KEY_FILE_NEW, dirfd, KEY_FILE)
                     : unlinkat(dirfd, KEY_FILE_NEW, 0);
    if (moved != 0 || fsync(dirfd) != 0) {
        set_err(err, errlen, "cannot %s %s/%s: %s", keep ? "install" : "remove", data_dir,
                KEY_FILE_NEW, strerror_r(errno, ebuf, sizeof(ebuf)));
        rc = MLR_EIO;
    }
    close(dirfd);
    return rc;
}

int mlr_master_key_staged(const char *data_dir, unsigned char key[MLR_MASTER_KEY_LEN])
{
    char *path = mlr_xasprintf("%s/%s", data_dir, KEY_FILE_NEW), err[256];
    int dirfd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = dirfd < 0 ? MLR_EIO
                       : key_file_read(dirfd, KEY_FILE_NEW, path, key, err, sizeof(err));
    if (dirfd >= 0)
        close(dirfd);
    free(path);
    return rc;
}
