/*
 * util.c — clocks, CSPRNG identifiers and the OpenSearch unit parsers (byte sizes, time values).
 * All functions are pure or thread-safe; none allocates.
 */
#include "common.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/rand.h>

int64_t mlr_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t mlr_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int mlr_id_new(char out[MLR_ID_LEN + 1])
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char raw[15];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return MLR_EIO;
    /* 15 bytes = 120 bits = exactly 20 base64 digits, so no padding is ever needed. */
    for (int i = 0, o = 0; i < 15; i += 3) {
        uint32_t v = (uint32_t)raw[i] << 16 | (uint32_t)raw[i + 1] << 8 | raw[i + 2];
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        out[o++] = alphabet[v & 63];
    }
    /* A leading '-' or '_' would make the id invalid as a custom id (and awkward on a command
     * line); map it onto a letter, which costs well under one bit of the 120. */
    if (out[0] == '-' || out[0] == '_')
        out[0] = alphabet[(raw[0] >> 2) % 52];
    out[MLR_ID_LEN] = '\0';
    return MLR_OK;
}

/* Splits "<digits>[.<digits>]<unit>" into a non-negative number and its unit suffix. */
static int split_number(const char *s, double *num, const char **unit)
{
    if (s == NULL || !isdigit((unsigned char)*s))
        return MLR_EINVAL;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || v < 0)
        return MLR_EINVAL;
    while (*end == ' ')
        end++;
    *num = v;
    *unit = end;
    return MLR_OK;
}

struct unit {
    const char *name;
    int64_t mult;
};

static int scale(double v, const char *u, const struct unit *units, int64_t *out)
{
    for (const struct unit *x = units; x->name; x++) {
        if (strcasecmp(u, x->name) == 0) {
            double r = v * (double)x->mult;
            if (r > 9.0e18)
                return MLR_EINVAL;
            *out = (int64_t)r;
            return MLR_OK;
        }
    }
    return MLR_EINVAL;
}

int mlr_parse_bytes(const char *s, int64_t *out)
{
    static const struct unit units[] = {
        {"", 1},           {"b", 1},
        {"k", 1LL << 10},  {"kb", 1LL << 10},
        {"m", 1LL << 20},  {"mb", 1LL << 20},
        {"g", 1LL << 30},  {"gb", 1LL << 30},
        {"t", 1LL << 40},  {"tb", 1LL << 40},
        {NULL, 0},
    };
    double v;
    const char *u;
    if (split_number(s, &v, &u) != MLR_OK)
        return MLR_EINVAL;
    return scale(v, u, units, out);
}

int mlr_parse_time_ms(const char *s, int64_t bare_unit_ms, int64_t *out)
{
    static const struct unit units[] = {
        {"ms", 1},        {"s", 1000},        {"m", 60000},
        {"h", 3600000},   {"d", 86400000},    {NULL, 0},
    };
    double v;
    const char *u;
    if (split_number(s, &v, &u) != MLR_OK)
        return MLR_EINVAL;
    if (*u == '\0') {
        if (bare_unit_ms == 0)
            return MLR_EINVAL;
        *out = (int64_t)(v * (double)bare_unit_ms);
        return MLR_OK;
    }
    return scale(v, u, units, out);
}
