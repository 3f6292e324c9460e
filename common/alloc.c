/*
 * alloc.c — allocate-or-abort wrappers. mlrelay treats OOM as fatal: every acknowledged write is
 * already committed to SQLite, so dying loses nothing a client was promised, and handling OOM on
 * every path would be code that is never exercised. Input can never cause OOM because every buffer
 * fed by the network has a hard cap (struct mlr_buf.max). Thread-safe.
 */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void oom(size_t n)
{
    char line[96];
    int len = snprintf(line, sizeof(line), "mlrelay: out of memory allocating %zu bytes\n", n);
    if (len > 0 && write(STDERR_FILENO, line, (size_t)len) < 0) {
        /* Nothing more we can do; we are about to abort anyway. */
    }
    abort();
}

void *mlr_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        oom(n);
    return p;
}

void *mlr_xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (p == NULL)
        oom(count * size);
    return p;
}

void *mlr_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        oom(n);
    return q;
}

char *mlr_xstrndup(const char *s, size_t n)
{
    char *p = mlr_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *mlr_xstrdup(const char *s)
{
    return mlr_xstrndup(s, strlen(s));
}

char *mlr_xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        oom(0);
    char *p = mlr_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}
