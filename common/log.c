/*
 * log.c — structured, line-oriented logging to stderr.
 *
 * Every event is one line written with a single write(2), so lines from concurrent threads never
 * interleave. Text lines read `2026-11-29T08:00:00.123Z INFO http: message key=value`; JSON lines
 * are one object each with "ts", "level", "comp", "msg" and the extra fields. Values are escaped
 * so a hostile string cannot forge a second line.
 *
 * The threshold and format are the only process-wide mutable state outside main.c: logging is
 * called from every thread and every module, and threading a logger handle through all of them
 * would add a parameter to nearly every function for no gain. They are set once at start-up.
 */
#include "common.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum mlr_log_level log_level = MLR_LOG_INFO;
static enum mlr_log_format log_format = MLR_LOG_TEXT;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void mlr_log_setup(enum mlr_log_level level, enum mlr_log_format format)
{
    log_level = level;
    log_format = format;
}

int mlr_log_level_parse(const char *s, enum mlr_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum mlr_log_level)i;
            return MLR_OK;
        }
    }
    return MLR_EINVAL;
}

int mlr_log_format_parse(const char *s, enum mlr_log_format *out)
{
    if (strcmp(s, "text") == 0)
        *out = MLR_LOG_TEXT;
    else if (strcmp(s, "json") == 0)
        *out = MLR_LOG_JSON;
    else
        return MLR_EINVAL;
    return MLR_OK;
}

int mlr_log_enabled(enum mlr_log_level level)
{
    return level >= log_level;
}

/* Appends @s escaped as JSON string contents (without quotes). Bytes that need no escape are
 * appended a run at a time: the access log escapes every field of every request, and one append
 * per byte cost a call and a capacity check per byte. */
static void put_escaped(struct mlr_buf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        const unsigned char *run = p;
        while (*p && *p != '"' && *p != '\\' && *p >= 0x20 && *p != 0x7f)
            p++;
        if (p > run)
            mlr_buf_append(b, run, (size_t)(p - run));
        if (*p == '"' || *p == '\\')
            mlr_buf_printf(b, "\\%c", *p);
        else if (*p)
            mlr_buf_printf(b, "\\u%04x", *p);
        if (*p)
            p++;
    }
}

/* Text values are quoted only when they contain spaces, quotes or '='. */
static void put_text_value(struct mlr_buf *b, const char *s)
{
    int quote = *s == '\0' || strpbrk(s, " \"=") != NULL;
    if (quote)
        mlr_buf_puts(b, "\"");
    put_escaped(b, s);
    if (quote)
        mlr_buf_puts(b, "\"");
}

static void put_timestamp(struct mlr_buf *b)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    mlr_buf_printf(b, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
                   tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}

static void format_json(struct mlr_buf *b, enum mlr_log_level level, const char *comp,
                        const char *msg, const char *const *kv, size_t nkv)
{
    mlr_buf_puts(b, "{\"ts\":\"");
    put_timestamp(b);
    mlr_buf_printf(b, "\",\"level\":\"%s\",\"comp\":\"", level_names[level]);
    put_escaped(b, comp);
    mlr_buf_puts(b, "\",\"msg\":\"");
    put_escaped(b, msg);
    mlr_buf_puts(b, "\"");
    for (size_t i = 0; i + 1 < nkv * 2; i += 2) {
        mlr_buf_puts(b, ",\"");
        put_escaped(b, kv[i]);
        mlr_buf_puts(b, "\":\"");
        put_escaped(b, kv[i + 1] ? kv[i + 1] : "");
        mlr_buf_puts(b, "\"");
    }
    mlr_buf_puts(b, "}\n");
}

static void format_text(struct mlr_buf *b, enum mlr_log_level level, const char *comp,
                        const char *msg, const char *const *kv, size_t nkv)
{
    static const char *const upper[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    put_timestamp(b);
    mlr_buf_printf(b, " %s ", upper[level]);
    put_escaped(b, comp);
    mlr_buf_puts(b, ": ");
    put_escaped(b, msg);
    for (size_t i = 0; i + 1 < nkv * 2; i += 2) {
        mlr_buf_puts(b, " ");
        put_escaped(b, kv[i]);
        mlr_buf_puts(b, "=");
        put_text_value(b, kv[i + 1] ? kv[i + 1] : "");
    }
    mlr_buf_puts(b, "\n");
}

void mlr_log_kv(enum mlr_log_level level, const char *comp, const char *msg, const char *const *kv,
                size_t nkv)
{
    if (!mlr_log_enabled(level))
        return;
    struct mlr_buf b;
    mlr_buf_init(&b, 0);
    if (log_format == MLR_LOG_JSON)
        format_json(&b, level, comp, msg, kv, nkv);
    else
        format_text(&b, level, comp, msg, kv, nkv);
    if (write(STDERR_FILENO, b.data, b.len) < 0) {
        /* stderr is gone; there is nowhere left to report it. */
    }
    mlr_buf_cleanup(&b);
}

void mlr_log(enum mlr_log_level level, const char *comp, const char *fmt, ...)
{
    if (!mlr_log_enabled(level))
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    mlr_log_kv(level, comp, msg, NULL, 0);
}
