/*
 * tls.c — TLS on the listener: the server's certificate context and, per connection, an OpenSSL
 * session that never touches a socket.
 *
 * Each session reads from and writes to two memory BIOs. conn.c feeds the bytes libuv read from
 * the socket into the session (api__tls_conn_feed), pulls out the plaintext the HTTP parser needs
 * (api__tls_conn_read), hands responses in as plaintext (api__tls_conn_write) and moves whatever
 * ciphertext the session produced (handshake messages, records, alerts, close_notify) to the
 * socket with uv_write (api__tls_conn_output). So OpenSSL never blocks and never sees the event
 * loop, and a plaintext connection does not go through this file at all.
 *
 * Policy: TLS 1.2 or newer; for TLS 1.2 only ECDHE key exchange with AEAD ciphers, for TLS 1.3
 * OpenSSL's default suites; no renegotiation, no compression; session tickets allowed. No ALPN:
 * the server speaks HTTP/1.1 only and a client that offers nothing else needs no negotiation.
 *
 * Reload: the context holds the current SSL_CTX. A reload builds a complete new SSL_CTX from the
 * same files and swaps it in only once it loaded and its key matched; sessions created before keep
 * a reference to the SSL_CTX they started with (SSL_new counts it), so nothing in flight changes.
 *
 * Errors: OpenSSL's error queue is per thread and the workers' libcurl shares the library, so the
 * queue is cleared before each call whose failure we inspect, and its codes are translated here
 * into MLR_EIO/MLR_EINVAL with OpenSSL's reason text in the caller's message buffer.
 *
 * Costs: a session holds OpenSSL's state (a few KiB; SSL_MODE_RELEASE_BUFFERS frees the record
 * buffers of idle connections) plus BIO buffers that grow to the largest response sealed at once.
 * Every byte is copied once into a BIO and once out of it. Loop thread only.
 */
#include "api_int.h"

#include <assert.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

/* TLS 1.2 suites: forward secret (ECDHE) and authenticated encryption (GCM, ChaCha20-Poly1305)
 * only, as in Mozilla's "intermediate" profile minus finite-field DHE. */
#define TLS12_CIPHERS                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

#define CHUNK 16384 /* bytes moved per SSL_read/BIO_read call: one maximal TLS record */

struct api_tls_ctx {
    SSL_CTX *ssl_ctx;   /* current context; sessions hold their own reference */
    char *cert_path;    /* PEM certificate chain, leaf first */
    char *key_path;     /* PEM private key, unencrypted */
};

struct api_tls_conn {
    SSL *ssl;
    BIO *rbio;          /* ciphertext from the socket, owned by ssl */
    BIO *wbio;          /* ciphertext for the socket, owned by ssl */
    int seen_input;     /* the first byte from the client has been checked */
    int failed;         /* a fatal error ended the session: no close_notify may follow */
    int shut;           /* close_notify has been produced */
};

/* Writes OpenSSL's first queued reason (or @fallback) after @what into @err, and empties the
 * queue so the next failure starts clean. */
static void describe_error(char *err, size_t errlen, const char *what, const char *fallback)
{
    unsigned long e = ERR_get_error();
    const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;
    char code[256];
    if (e != 0 && ERR_SYSTEM_ERROR(e))
        reason = strerror(ERR_GET_REASON(e)); /* OpenSSL 3 keeps errno there, without a text */
    if (e != 0 && reason == NULL) {
        ERR_error_string_n(e, code, sizeof(code));
        reason = code;
    }
    snprintf(err, errlen, "%s: %s", what, reason ? reason : fallback);
    ERR_clear_error();
}

/* Encrypted keys would make OpenSSL prompt on the terminal, which a service must never do. */
static int refuse_passphrase(char *buf, int size, int rwflag, void *data)
{
    UNUSED(buf);
    UNUSED(size);
    UNUSED(rwflag);
    UNUSED(data);
    return 0;
}

/* Logs the certificate's subject and expiry; warns when it has already expired. */
static void log_certificate(SSL_CTX *ssl_ctx, const char *cert_path, const char *event)
{
    X509 *x = SSL_CTX_get0_certificate(ssl_ctx);
    char subject[256] = "?";
    char not_after[32] = "?";
    struct tm tm;
    if (x == NULL)
        return;
    X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof(subject));
    if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
        strftime(not_after, sizeof(not_after), "%Y-%m-%dT%H:%M:%SZ", &tm);
    const char *kv[] = {"cert", cert_path, "subject", subject, "not_after", not_after};
    mlr_log_kv(MLR_LOG_INFO, "tls", event, kv, 3);
    if (X509_cmp_current_time(X509_get0_notAfter(x)) < 0)
        mlr_log(MLR_LOG_WARN, "tls", "the certificate %s expired at %s: clients will refuse it",
                cert_path, not_after);
}

/* Applies the protocol policy described at the top of this file. */
static int apply_policy(SSL_CTX *ssl_ctx)
{
    SSL_CTX_set_options(ssl_ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                     SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ssl_ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_default_passwd_cb(ssl_ctx, refuse_passphrase);
    if (SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ssl_ctx, TLS12_CIPHERS) != 1)
        return MLR_EINTERNAL;
    return MLR_OK;
}

/* Builds a complete server SSL_CTX from the two files. */
static int load_ctx(const char *cert, const char *key, SSL_CTX **out, char *err, size_t errlen)
{
    char what[512];
    int rc = MLR_EIO;
    ERR_clear_error();
    SSL_CTX *ssl_ctx = SSL_CTX_new(TLS_server_method());
    if (ssl_ctx == NULL || apply_policy(ssl_ctx) != MLR_OK) {
        describe_error(err, errlen, "cannot set up TLS", "internal error");
        goto out;
    }
    if (SSL_CTX_use_certificate_chain_file(ssl_ctx, cert) != 1) {
        snprintf(what, sizeof(what), "cannot load TLS certificate %s", cert);
        describe_error(err, errlen, what, "not a PEM certificate");
        goto out;
    }
    if (SSL_CTX_use_PrivateKey_file(ssl_ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ssl_ctx) != 1) {
        snprintf(what, sizeof(what), "cannot load TLS key %s for certificate %s", key, cert);
        describe_error(err, errlen, what, "not an unencrypted PEM private key");
        goto out;
    }
    *out = ssl_ctx;
    ssl_ctx = NULL; /* the caller owns it now */
    rc = MLR_OK;
out:
    SSL_CTX_free(ssl_ctx);
    return rc;
}

int api__tls_ctx_new(const char *cert, const char *key, struct api_tls_ctx **out, char *err,
                     size_t errlen)
{
    assert(cert != NULL && key != NULL);
    SSL_CTX *ssl_ctx = NULL;
    int rc = load_ctx(cert, key, &ssl_ctx, err, errlen);
    if (rc != MLR_OK)
        return rc;
    struct api_tls_ctx *t = mlr_xcalloc(1, sizeof(*t));
    t->ssl_ctx = ssl_ctx;
    t->cert_path = mlr_xstrdup(cert);
    t->key_path = mlr_xstrdup(key);
    log_certificate(ssl_ctx, cert, "tls certificate loaded");
    *out = t;
    return MLR_OK;
}

int api__tls_ctx_reload(struct api_tls_ctx *t, char *err, size_t errlen)
{
    SSL_CTX *fresh = NULL;
    int rc = load_ctx(t->cert_path, t->key_path, &fresh, err, errlen);
    if (rc != MLR_OK)
        return rc;
    SSL_CTX_free(t->ssl_ctx); /* drops our reference; live sessions keep theirs */
    t->ssl_ctx = fresh;
    log_certificate(fresh, t->cert_path, "tls certificate reloaded");
    return MLR_OK;
}

void api__tls_ctx_free(struct api_tls_ctx *t)
{
    if (t == NULL)
        return;
    SSL_CTX_free(t->ssl_ctx);
    free(t->cert_path);
    free(t->key_path);
    free(t);
}

struct api_tls_conn *api__tls_conn_new(struct api_tls_ctx *t)
{
    struct api_tls_conn *tc = mlr_xcalloc(1, sizeof(*tc));
    tc->ssl = SSL_new(t->ssl_ctx);
    tc->rbio = BIO_new(BIO_s_mem());
    tc->wbio = BIO_new(BIO_s_mem());
    if (tc->ssl == NULL || tc->rbio == NULL || tc->wbio == NULL) {
        mlr_log(MLR_LOG_ERROR, "tls", "out of memory creating a TLS session");
        abort(); /* the house rule for OOM (mlr_xmalloc) */
    }
    /* An empty read BIO means "more data later", not end of file. */
    BIO_set_mem_eof_return(tc->rbio, -1);
    SSL_set_bio(tc->ssl, tc->rbio, tc->wbio); /* the session owns both BIOs now */
    SSL_set_accept_state(tc->ssl);
    return tc;
}

void api__tls_conn_free(struct api_tls_conn *tc)
{
    if (tc == NULL)
        return;
    SSL_free(tc->ssl);
    free(tc);
}

/* A TLS connection always opens with a handshake record (content type 22). An upper-case letter
 * first is a request line ("GET /"): someone used http:// against the TLS port. */
static int looks_like_plain_http(unsigned char first)
{
    return first >= 'A' && first <= 'Z';
}

int api__tls_conn_feed(struct api_tls_conn *tc, const void *data, size_t len)
{
    if (len == 0)
        return MLR_OK;
    if (!tc->seen_input) {
        tc->seen_input = 1;
        if (looks_like_plain_http(*(const unsigned char *)data)) {
            tc->failed = 1;
            return MLR_EINVAL;
        }
    }
    assert(len <= INT_MAX);
    if (BIO_write(tc->rbio, data, (int)len) != (int)len) {
        tc->failed = 1;
        return MLR_ENOMEM;
    }
    return MLR_OK;
}

int api__tls_conn_read(struct api_tls_conn *tc, struct mlr_buf *plain, char *err, size_t errlen)
{
    char chunk[CHUNK];
    if (tc->failed) {
        snprintf(err, errlen, "the TLS session already failed");
        return MLR_EIO;
    }
    for (;;) {
        ERR_clear_error();
        int n = SSL_read(tc->ssl, chunk, sizeof(chunk));
        if (n > 0) {
            if (mlr_buf_append(plain, chunk, (size_t)n) != MLR_OK) {
                snprintf(err, errlen, "decrypted input exceeds the buffer limit");
                return MLR_ETOOBIG;
            }
            continue;
        }
        switch (SSL_get_error(tc->ssl, n)) {
        case SSL_ERROR_WANT_READ:
            return MLR_OK; /* everything complete is decrypted; the rest is a partial record */
        case SSL_ERROR_ZERO_RETURN:
            return MLR_OK; /* close_notify: the TCP end of file follows and ends the connection */
        default:
            tc->failed = 1;
            describe_error(err, errlen, "TLS failed", "connection error");
            return MLR_EIO;
        }
    }
}

int api__tls_conn_write(struct api_tls_conn *tc, const void *data, size_t len)
{
    const char *p = data;
    if (len == 0)
        return MLR_OK; /* a flush of pending output after a failure (the alert) must go through */
    if (tc->failed)
        return MLR_EIO;
    while (len > 0) {
        int n = len > INT_MAX ? INT_MAX : (int)len;
        ERR_clear_error();
        /* The write BIO grows as needed, so SSL_write either takes everything or fails. */
        n = SSL_write(tc->ssl, p, n);
        if (n <= 0) {
            tc->failed = 1;
            ERR_clear_error();
            return MLR_EIO;
        }
        p += n;
        len -= (size_t)n;
    }
    return MLR_OK;
}

void api__tls_conn_output(struct api_tls_conn *tc, struct mlr_buf *out)
{
    char chunk[CHUNK];
    /* Reading (rather than resetting) the BIO only moves its read pointer: no clearing cost. */
    for (;;) {
        int n = BIO_read(tc->wbio, chunk, sizeof(chunk));
        if (n <= 0)
            break;
        mlr_buf_append(out, chunk, (size_t)n);
    }
}

int api__tls_conn_established(const struct api_tls_conn *tc)
{
    return SSL_is_init_finished(tc->ssl);
}

int api__tls_conn_shutdown(struct api_tls_conn *tc)
{
    if (tc->failed || tc->shut || !SSL_is_init_finished(tc->ssl))
        return 0;
    tc->shut = 1;
    ERR_clear_error();
    SSL_shutdown(tc->ssl); /* queues close_notify; we never wait for the peer's */
    ERR_clear_error();
    return 1;
}
