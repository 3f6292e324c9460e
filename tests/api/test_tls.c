/*
 * test_tls.c — unit tests of api/tls.c: a server session driven only through its feed, read,
 * write and output calls talks to an ordinary OpenSSL client over memory BIOs, with no socket and
 * no loop. Certificates are made in the test (EC P-256, self-signed, one day) in a mkdtemp
 * directory, so nothing is checked in.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "api_int.h"

struct files {
    char dir[64];
    char cert[128]; /* current certificate path given to the server */
    char key[128];
};

/* Writes a self-signed certificate for "localhost" with O=@org to @cert_path/@key_path. */
static void write_cert(const char *cert_path, const char *key_path, const char *org, long serial)
{
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    assert_non_null(pkey);
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, pkey);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)org, -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1,
                               -1, 0);
    X509_set_issuer_name(x, name);
    assert_true(X509_sign(x, pkey, EVP_sha256()) > 0);
    FILE *f = fopen(cert_path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_X509(f, x), 1);
    fclose(f);
    f = fopen(key_path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(pkey);
}

static void files_init(struct files *fs, const char *org)
{
    snprintf(fs->dir, sizeof(fs->dir), "/tmp/mlr-tls-XXXXXX");
    assert_non_null(mkdtemp(fs->dir));
    snprintf(fs->cert, sizeof(fs->cert), "%s/cert.pem", fs->dir);
    snprintf(fs->key, sizeof(fs->key), "%s/key.pem", fs->dir);
    write_cert(fs->cert, fs->key, org, 1);
}

static void files_cleanup(struct files *fs)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", fs->dir);
    assert_int_equal(system(cmd), 0);
}

/* One client (plain OpenSSL) and one server session (api/tls.c) joined by memory. */
struct pair {
    SSL_CTX *cli_ctx;
    SSL *cli;
    BIO *cli_in;                 /* server -> client, owned by cli */
    BIO *cli_out;                /* client -> server, owned by cli */
    struct api_tls_conn *srv;
    struct mlr_buf plain;        /* what the server decrypted */
    char err[256];               /* the server's last error */
};

/* @ca: the only certificate the client trusts; @max_version 0 = library default. */
static void pair_init(struct pair *p, struct api_tls_ctx *t, const char *ca, int min_version,
                      int max_version)
{
    memset(p, 0, sizeof(*p));
    p->cli_ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(p->cli_ctx);
    assert_int_equal(SSL_CTX_load_verify_locations(p->cli_ctx, ca, NULL), 1);
    SSL_CTX_set_verify(p->cli_ctx, SSL_VERIFY_PEER, NULL);
    if (min_version != 0) {
        SSL_CTX_set_security_level(p->cli_ctx, 0); /* OpenSSL 3 offers TLS 1.1 only at level 0 */
        SSL_CTX_set_cipher_list(p->cli_ctx, "DEFAULT:@SECLEVEL=0");
        SSL_CTX_set_min_proto_version(p->cli_ctx, min_version);
    }
    if (max_version != 0)
        SSL_CTX_set_max_proto_version(p->cli_ctx, max_version);
    p->cli = SSL_new(p->cli_ctx);
    p->cli_in = BIO_new(BIO_s_mem());
    p->cli_out = BIO_new(BIO_s_mem());
    SSL_set_bio(p->cli, p->cli_in, p->cli_out);
    SSL_set_connect_state(p->cli);
    SSL_set1_host(p->cli, "localhost");
    p->srv = api__tls_conn_new(t);
    mlr_buf_init(&p->plain, 0);
}

static void pair_cleanup(struct pair *p)
{
    SSL_free(p->cli);
    SSL_CTX_free(p->cli_ctx);
    api__tls_conn_free(p->srv);
    mlr_buf_cleanup(&p->plain);
}

/* Moves the client's output into the server, runs the server, moves its output to the client.
 * Returns what the server's read returned. */
static int pump(struct pair *p)
{
    char buf[16384];
    for (;;) {
        int n = BIO_read(p->cli_out, buf, sizeof(buf));
        if (n <= 0)
            break;
        assert_int_equal(api__tls_conn_feed(p->srv, buf, (size_t)n), MLR_OK);
    }
    int rc = api__tls_conn_read(p->srv, &p->plain, p->err, sizeof(p->err));
    struct mlr_buf out;
    mlr_buf_init(&out, 0);
    api__tls_conn_output(p->srv, &out);
    if (out.len > 0)
        assert_int_equal(BIO_write(p->cli_in, out.data, (int)out.len), (int)out.len);
    mlr_buf_cleanup(&out);
    return rc;
}

/* Runs the handshake to its end on both sides; returns the server's error if it failed. */
static int handshake(struct pair *p)
{
    for (int round = 0; round < 10; round++) {
        int done = SSL_do_handshake(p->cli) == 1;
        int rc = pump(p);
        if (rc != MLR_OK)
            return rc;
        if (done && api__tls_conn_established(p->srv))
            return MLR_OK;
    }
    fail_msg("handshake did not finish");
    return MLR_EINTERNAL;
}

/* The O= of the certificate the client was given. */
static void peer_org(struct pair *p, char *out, size_t outlen)
{
    X509 *x = SSL_get0_peer_certificate(p->cli);
    assert_non_null(x);
    assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_organizationName, out,
                                          (int)outlen) > 0);
}

static struct api_tls_ctx *ctx_for(const struct files *fs)
{
    struct api_tls_ctx *t = NULL;
    char err[512] = "";
    if (api__tls_ctx_new(fs->cert, fs->key, &t, err, sizeof(err)) != MLR_OK)
        fail_msg("api__tls_ctx_new: %s", err);
    return t;
}

static void handshake_request_response_close(void **state)
{
    UNUSED(state);
    struct files fs;
    files_init(&fs, "one");
    struct api_tls_ctx *t = ctx_for(&fs);
    struct pair p;
    pair_init(&p, t, fs.cert, 0, 0);
    assert_false(api__tls_conn_established(p.srv));
    assert_int_equal(handshake(&p), MLR_OK);
    assert_string_equal(SSL_get_version(p.cli), "TLSv1.3");
    /* a request in, decrypted */
    const char req[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(SSL_write(p.cli, req, (int)strlen(req)), (int)strlen(req));
    assert_int_equal(pump(&p), MLR_OK);
    assert_int_equal(p.plain.len, strlen(req));
    assert_memory_equal(p.plain.data, req, strlen(req));
    /* a response of several records out, sealed */
    size_t big = 100000;
    char *body = malloc(big);
    memset(body, 'x', big);
    assert_int_equal(api__tls_conn_write(p.srv, body, big), MLR_OK);
    assert_int_equal(pump(&p), MLR_OK);
    size_t got = 0;
    char buf[16384];
    for (;;) {
        int n = SSL_read(p.cli, buf, sizeof(buf));
        if (n <= 0)
            break;
        for (int i = 0; i < n; i++)
            assert_int_equal(buf[i], 'x');
        got += (size_t)n;
    }
    assert_int_equal(got, big);
    free(body);
    /* close_notify once, then nothing more to do */
    assert_int_equal(api__tls_conn_shutdown(p.srv), 1);
    assert_int_equal(api__tls_conn_shutdown(p.srv), 0);
    assert_int_equal(pump(&p), MLR_OK);
    assert_int_equal(SSL_read(p.cli, buf, sizeof(buf)), 0);
    assert_int_equal(SSL_get_error(p.cli, 0), SSL_ERROR_ZERO_RETURN);
    pair_cleanup(&p);
    api__tls_ctx_free(t);
    files_cleanup(&fs);
}

static void tls12_gets_an_aead_suite(void **state)
{
    UNUSED(state);
    struct files fs;
    files_init(&fs, "one");
    struct api_tls_ctx *t = ctx_for(&fs);
    struct pair p;
    pair_init(&p, t, fs.cert, 0, TLS1_2_VERSION);
    assert_int_equal(handshake(&p), MLR_OK);
    assert_string_equal(SSL_get_version(p.cli), "TLSv1.2");
    const char *cipher = SSL_get_cipher_name(p.cli);
    assert_true(strstr(cipher, "GCM") != NULL || strstr(cipher, "CHACHA20") != NULL);
    assert_true(strncmp(cipher, "ECDHE-", 6) == 0);
    pair_cleanup(&p);
    api__tls_ctx_free(t);
    files_cleanup(&fs);
}

static void tls11_is_refused_with_an_alert(void **state)
{
    UNUSED(state);
    struct files fs;
    files_init(&fs, "one");
    struct api_tls_ctx *t = ctx_for(&fs);
    struct pair p;
    pair_init(&p, t, fs.cert, TLS1_1_VERSION, TLS1_1_VERSION);
    assert_int_equal(handshake(&p), MLR_EIO);
    assert_non_null(strstr(p.err, "unsupported protocol"));
    /* the alert reached the client, which fails the handshake because of it */
    assert_true(SSL_do_handshake(p.cli) <= 0);
    assert_true(strstr(ERR_reason_error_string(ERR_peek_last_error()), "protocol version") !=
                NULL);
    ERR_clear_error();
    /* a failed session refuses data but not an empty flush */
    assert_int_equal(api__tls_conn_write(p.srv, "x", 1), MLR_EIO);
    assert_int_equal(api__tls_conn_write(p.srv, "", 0), MLR_OK);
    assert_int_equal(api__tls_conn_shutdown(p.srv), 0);
    pair_cleanup(&p);
    api__tls_ctx_free(t);
    files_cleanup(&fs);
}

static void plain_http_is_recognised(void **state)
{
    UNUSED(state);
    struct files fs;
    files_init(&fs, "one");
    struct api_tls_ctx *t = ctx_for(&fs);
    struct api_tls_conn *tc = api__tls_conn_new(t);
    assert_int_equal(api__tls_conn_feed(tc, "GET / HTTP/1.1\r\n", 16), MLR_EINVAL);
    api__tls_conn_free(tc);
    /* garbage that is neither TLS nor a request line is left to OpenSSL, which refuses it */
    tc = api__tls_conn_new(t);
    struct mlr_buf plain;
    mlr_buf_init(&plain, 0);
    char err[256];
    assert_int_equal(api__tls_conn_feed(tc, "\x01\x02\x03\x04\x05\x06\x07\x08", 8), MLR_OK);
    assert_int_equal(api__tls_conn_read(tc, &plain, err, sizeof(err)), MLR_EIO);
    assert_int_equal(plain.len, 0);
    mlr_buf_cleanup(&plain);
    api__tls_conn_free(tc);
    api__tls_ctx_free(t);
    files_cleanup(&fs);
}

static void reload_swaps_for_new_sessions_only(void **state)
{
    UNUSED(state);
    struct files fs;
    files_init(&fs, "first");
    char first_ca[160], second_ca[160], org[64], err[512];
    snprintf(first_ca, sizeof(first_ca), "%s/first.pem", fs.dir);
    snprintf(second_ca, sizeof(second_ca), "%s/second.pem", fs.dir);
    assert_int_equal(rename(fs.cert, first_ca), 0);
    assert_int_equal(symlink(first_ca, fs.cert), 0);
    struct api_tls_ctx *t = ctx_for(&fs);
    struct pair before;
    pair_init(&before, t, first_ca, 0, 0); /* created before the reload */
    /* a new certificate and key at the same paths */
    char second_key[160];
    snprintf(second_key, sizeof(second_key), "%s/second.key", fs.dir);
    write_cert(second_ca, second_key, "second", 2);
    unlink(fs.cert);
    assert_int_equal(rename(second_key, fs.key), 0);
    assert_int_equal(symlink(second_ca, fs.cert), 0);
    assert_int_equal(api__tls_ctx_reload(t, err, sizeof(err)), MLR_OK);
    struct pair after;
    pair_init(&after, t, second_ca, 0, 0);
    assert_int_equal(handshake(&after), MLR_OK);
    peer_org(&after, org, sizeof(org));
    assert_string_equal(org, "second");
    /* a broken certificate: the reload fails and the context is unchanged */
    unlink(fs.cert);
    FILE *f = fopen(fs.cert, "w");
    fputs("not a certificate\n", f);
    fclose(f);
    assert_int_equal(api__tls_ctx_reload(t, err, sizeof(err)), MLR_EIO);
    assert_non_null(strstr(err, fs.cert));
    struct pair later;
    pair_init(&later, t, second_ca, 0, 0);
    assert_int_equal(handshake(&later), MLR_OK);
    peer_org(&later, org, sizeof(org));
    assert_string_equal(org, "second");
    /* the session made before the reload still has the first certificate, even with the
     * context gone */
    api__tls_ctx_free(t);
    assert_int_equal(handshake(&before), MLR_OK);
    peer_org(&before, org, sizeof(org));
    assert_string_equal(org, "first");
    pair_cleanup(&before);
    pair_cleanup(&after);
    pair_cleanup(&later);
    files_cleanup(&fs);
}

static void mismatched_or_missing_files_fail(void **state)
{
    UNUSED(state);
    struct files fs;
    files_init(&fs, "one");
    char other_cert[160], other_key[160], err[512] = "";
    snprintf(other_cert, sizeof(other_cert), "%s/other.pem", fs.dir);
    snprintf(other_key, sizeof(other_key), "%s/other.key", fs.dir);
    write_cert(other_cert, other_key, "other", 3);
    struct api_tls_ctx *t = NULL;
    assert_int_equal(api__tls_ctx_new(fs.cert, other_key, &t, err, sizeof(err)), MLR_EIO);
    assert_null(t);
    assert_non_null(strstr(err, "key values mismatch"));
    assert_int_equal(api__tls_ctx_new("/nonexistent.pem", fs.key, &t, err, sizeof(err)), MLR_EIO);
    assert_null(t);
    assert_non_null(strstr(err, "No such file or directory"));
    assert_int_equal(api__tls_ctx_new(fs.key, fs.key, &t, err, sizeof(err)), MLR_EIO);
    assert_null(t);
    api__tls_ctx_free(NULL);
    api__tls_conn_free(NULL);
    files_cleanup(&fs);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(handshake_request_response_close),
        cmocka_unit_test(tls12_gets_an_aead_suite),
        cmocka_unit_test(tls11_is_refused_with_an_alert),
        cmocka_unit_test(plain_http_is_recognised),
        cmocka_unit_test(reload_swaps_for_new_sessions_only),
        cmocka_unit_test(mismatched_or_missing_files_fail),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
