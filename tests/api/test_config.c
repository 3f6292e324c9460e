/*
 * test_config.c — unit tests of the node configuration: defaults, flag forms, precedence
 * (flags > environment > config file), value checks and config-file errors.
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

#include <json-c/json.h>

#include "api.h"

/* A fake environment: NAME=VALUE pairs, NULL-terminated. */
static const char *const *fake_env;

static const char *fake_getenv(const char *name)
{
    size_t n = strlen(name);
    for (const char *const *e = fake_env; e && *e; e++) {
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return *e + n + 1;
    }
    return NULL;
}

static int load(struct mlr_config *cfg, const char *const *env, char *err, int argc, ...)
{
    char *argv[16] = {"mlrelay"};
    va_list ap;
    va_start(ap, argc);
    for (int i = 1; i <= argc; i++)
        argv[i] = va_arg(ap, char *);
    va_end(ap);
    fake_env = env;
    enum mlr_config_action action;
    return mlr_config_load(cfg, argc + 1, argv, fake_getenv, &action, err, 512);
}

static char *write_file(const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/mlr-config-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void defaults(void **state)
{
    UNUSED(state);
    struct mlr_config cfg;
    char err[512];
    assert_int_equal(load(&cfg, NULL, err, 0), MLR_OK);
    assert_string_equal(cfg.listen_host, "127.0.0.1");
    assert_int_equal(cfg.listen_port, 9200);
    assert_string_equal(cfg.data_dir, "./data");
    assert_int_equal(cfg.max_content_length, 100LL * 1024 * 1024);
    assert_int_equal(cfg.max_header_size, 16 * 1024);
    assert_int_equal(cfg.max_connections, 10000);
    assert_int_equal(cfg.idle_timeout_ms, 60000);
    assert_int_equal(cfg.request_timeout_ms, 30000);
    assert_int_equal(cfg.log_level, MLR_LOG_INFO);
    mlr_config_cleanup(&cfg);
}

static void flags_both_forms(void **state)
{
    UNUSED(state);
    struct mlr_config cfg;
    char err[512];
    assert_int_equal(load(&cfg, NULL, err, 4, "--listen", "[::1]:0", "--log-level=debug",
                          "--data-dir=/tmp/x"),
                     MLR_OK);
    assert_string_equal(cfg.listen_host, "::1");
    assert_int_equal(cfg.listen_port, 0);
    assert_int_equal(cfg.log_level, MLR_LOG_DEBUG);
    assert_string_equal(cfg.data_dir, "/tmp/x");
    mlr_config_cleanup(&cfg);
}

static void precedence_flag_env_file(void **state)
{
    UNUSED(state);
    char *path = write_file("{\"listen\": \"127.0.0.1:1111\", \"data_dir\": \"/from/file\","
                            " \"http.idle_timeout\": \"5s\"}");
    char cfgflag[128];
    snprintf(cfgflag, sizeof(cfgflag), "--config=%s", path);
    const char *env[] = {"MLRELAY_LISTEN=127.0.0.1:2222", NULL};
    struct mlr_config cfg;
    char err[512];
    assert_int_equal(load(&cfg, env, err, 1, cfgflag), MLR_OK);
    assert_int_equal(cfg.listen_port, 2222);            /* env beats file */
    assert_string_equal(cfg.data_dir, "/from/file");    /* file beats default */
    assert_int_equal(cfg.idle_timeout_ms, 5000);
    mlr_config_cleanup(&cfg);
    assert_int_equal(load(&cfg, env, err, 3, cfgflag, "--listen", "127.0.0.1:3333"), MLR_OK);
    assert_int_equal(cfg.listen_port, 3333);            /* flag beats env */
    mlr_config_cleanup(&cfg);
    char envcfg[128];
    snprintf(envcfg, sizeof(envcfg), "MLRELAY_CONFIG=%s", path);
    const char *env2[] = {envcfg, NULL};
    assert_int_equal(load(&cfg, env2, err, 0), MLR_OK); /* config path from the environment */
    assert_int_equal(cfg.listen_port, 1111);
    mlr_config_cleanup(&cfg);
    unlink(path);
}

static void cluster_keys_go_to_the_cluster_layer(void **state)
{
    UNUSED(state);
    char *path = write_file("{\"plugins.ml_commons.model_auto_deploy.enable\": false,"
                            " \"plugins.ml_commons.something_new\": 3}");
    char flag[128];
    snprintf(flag, sizeof(flag), "--config=%s", path);
    struct mlr_config cfg;
    char err[512];
    assert_int_equal(load(&cfg, NULL, err, 1, flag), MLR_OK);
    struct json_object *v = json_object_object_get(cfg.cluster,
                                                   "plugins.ml_commons.model_auto_deploy.enable");
    assert_string_equal(json_object_get_string(v), "false");
    v = json_object_object_get(cfg.cluster, "plugins.ml_commons.something_new");
    assert_string_equal(json_object_get_string(v), "3");
    mlr_config_cleanup(&cfg);
    unlink(path);
}

static void errors_are_reported(void **state)
{
    UNUSED(state);
    static const struct {
        const char *file;   /* config file text, or NULL */
        const char *flag;   /* extra argument, or NULL */
        const char *expect; /* substring of the message */
    } cases[] = {
        {NULL, "--bogus", "unknown option [--bogus]"},
        {NULL, "--listen", "needs a value"},
        {NULL, "--listen=nohost", "invalid listen address"},
        {NULL, "--listen=1.2.3.4:99999", "invalid listen address"},
        {NULL, "--log-level=loud", "invalid value [loud] for [log.level]"},
        {"{not json", NULL, "cannot read config file"},
        {"[1,2]", NULL, "not a JSON object"},
        {"{\"http.max_connections\": \"abc\"}", NULL, "invalid value [abc]"},
        {"{\"http.max_connections\": 0}", NULL, "invalid value [0]"},
        {"{\"no.such.key\": 1}", NULL, "unknown config key [no.such.key]"},
        {"{\"plugins.ml_commons.sync_up_job_interval_in_seconds\": 999999}", NULL, "86400"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct mlr_config cfg;
        char err[512] = "";
        char flag[128];
        int rc;
        if (cases[i].file) {
            char *path = write_file(cases[i].file);
            snprintf(flag, sizeof(flag), "--config=%s", path);
            rc = load(&cfg, NULL, err, 1, flag);
            unlink(path);
        } else {
            rc = load(&cfg, NULL, err, 1, cases[i].flag);
        }
        if (rc != MLR_EINVAL || strstr(err, cases[i].expect) == NULL)
            fail_msg("case %zu: rc %d, message [%s], expected [%s]", i, rc, err, cases[i].expect);
        mlr_config_cleanup(&cfg);
    }
}

static void tls_pair_and_precedence(void **state)
{
    UNUSED(state);
    char *path = write_file("{\"tls.cert\": \"/file/cert.pem\", \"tls.key\": \"/file/key.pem\"}");
    char cfgflag[128];
    snprintf(cfgflag, sizeof(cfgflag), "--config=%s", path);
    const char *env[] = {"MLRELAY_TLS_CERT=/env/cert.pem", "MLRELAY_TLS_KEY=/env/key.pem", NULL};
    struct mlr_config cfg;
    char err[512];
    assert_int_equal(load(&cfg, NULL, err, 0), MLR_OK);
    assert_null(cfg.tls_cert); /* plaintext by default */
    assert_null(cfg.tls_key);
    mlr_config_cleanup(&cfg);
    assert_int_equal(load(&cfg, NULL, err, 1, cfgflag), MLR_OK);
    assert_string_equal(cfg.tls_cert, "/file/cert.pem");
    assert_string_equal(cfg.tls_key, "/file/key.pem");
    mlr_config_cleanup(&cfg);
    assert_int_equal(load(&cfg, env, err, 1, cfgflag), MLR_OK); /* env beats file */
    assert_string_equal(cfg.tls_cert, "/env/cert.pem");
    assert_string_equal(cfg.tls_key, "/env/key.pem");
    mlr_config_cleanup(&cfg);
    assert_int_equal(load(&cfg, env, err, 3, cfgflag, "--tls-cert", "/flag/cert.pem"), MLR_OK);
    assert_string_equal(cfg.tls_cert, "/flag/cert.pem"); /* flag beats env */
    assert_string_equal(cfg.tls_key, "/env/key.pem");
    mlr_config_cleanup(&cfg);
    /* Only one of the two, from any layer, is a configuration error. */
    assert_int_equal(load(&cfg, NULL, err, 1, "--tls-cert=/a.pem"), MLR_EINVAL);
    assert_non_null(strstr(err, "tls.cert and tls.key must be set together"));
    assert_non_null(strstr(err, "tls.key is not"));
    mlr_config_cleanup(&cfg);
    const char *env_key_only[] = {"MLRELAY_TLS_KEY=/env/key.pem", NULL};
    assert_int_equal(load(&cfg, env_key_only, err, 0), MLR_EINVAL);
    assert_non_null(strstr(err, "tls.cert is not"));
    mlr_config_cleanup(&cfg);
    /* An empty flag unsets what the file set; the key alone is then an error. */
    assert_int_equal(load(&cfg, NULL, err, 2, cfgflag, "--tls-cert="), MLR_EINVAL);
    mlr_config_cleanup(&cfg);
    assert_int_equal(load(&cfg, NULL, err, 3, cfgflag, "--tls-cert=", "--tls-key="), MLR_OK);
    assert_null(cfg.tls_cert);
    mlr_config_cleanup(&cfg);
    unlink(path);
}

static void help_and_version(void **state)
{
    UNUSED(state);
    char *argv[] = {"mlrelay", "--version"};
    struct mlr_config cfg;
    enum mlr_config_action action = MLR_RUN_SERVER;
    char err[512];
    assert_int_equal(mlr_config_load(&cfg, 2, argv, fake_getenv, &action, err, 512), MLR_OK);
    assert_int_equal(action, MLR_PRINT_VERSION);
    mlr_config_cleanup(&cfg);
    argv[1] = "--help";
    assert_int_equal(mlr_config_load(&cfg, 2, argv, fake_getenv, &action, err, 512), MLR_OK);
    assert_int_equal(action, MLR_PRINT_HELP);
    assert_non_null(strstr(mlr_usage_text, "--listen HOST:PORT"));
    mlr_config_cleanup(&cfg);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults),
        cmocka_unit_test(flags_both_forms),
        cmocka_unit_test(precedence_flag_env_file),
        cmocka_unit_test(cluster_keys_go_to_the_cluster_layer),
        cmocka_unit_test(errors_are_reported),
        cmocka_unit_test(tls_pair_and_precedence),
        cmocka_unit_test(help_and_version),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
