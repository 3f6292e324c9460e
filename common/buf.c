/*
 * buf.c — growable byte buffers with a hard cap, and the per-request arena.
 *
 * Buffers double their allocation, so appends are amortised O(1); the cap is checked before any
 * growth, so hostile input fails with MLR_ETOOBIG instead of exhausting memory. The arena hands
 * out bump allocations from 4 KiB chunks (larger requests get a chunk of their own) and frees them
 * all at once. Neither is thread-safe; each instance belongs to one thread at a time.
 */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mlr_buf_init(struct mlr_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void mlr_buf_cleanup(struct mlr_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void mlr_buf_reset(struct mlr_buf *b)
{
    b->len = 0;
    if (b->data != NULL)
        b->data[0] = '\0';
}

static int reserve(struct mlr_buf *b, size_t extra)
{
    if (b->max != 0 && (extra > b->max || b->len > b->max - extra))
        return MLR_ETOOBIG;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return MLR_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    b->data = mlr_xrealloc(b->data, cap);
    b->cap = cap;
    return MLR_OK;
}

int mlr_buf_append(struct mlr_buf *b, const void *p, size_t n)
{
    int rc = reserve(b, n);
    if (rc != MLR_OK)
        return rc;
    if (n > 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return MLR_OK;
}

int mlr_buf_puts(struct mlr_buf *b, const char *s)
{
    return mlr_buf_append(b, s, strlen(s));
}

int mlr_buf_printf(struct mlr_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return MLR_EINVAL;
    int rc = reserve(b, (size_t)n);
    if (rc != MLR_OK)
        return rc;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return MLR_OK;
}

void mlr_buf_consume(struct mlr_buf *b, size_t n)
{
    if (n >= b->len) {
        mlr_buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

/* ---------------------------------- arena ---------------------------------- */

#define POOL_CHUNK 4096
#define POOL_ALIGN 16

struct mlr_pool_chunk {
    struct mlr_pool_chunk *next; /* older chunk */
    size_t used;                 /* bytes handed out from mem */
    size_t size;                 /* bytes in mem */
    _Alignas(POOL_ALIGN) char mem[];
};

void mlr_pool_init(struct mlr_pool *p)
{
    p->_head = NULL;
}

void mlr_pool_cleanup(struct mlr_pool *p)
{
    struct mlr_pool_chunk *c = p->_head;
    while (c != NULL) {
        struct mlr_pool_chunk *next = c->next;
        free(c);
        c = next;
    }
    p->_head = NULL;
}

void *mlr_pool_alloc(struct mlr_pool *p, size_t n)
{
    n = (n + POOL_ALIGN - 1) & ~(size_t)(POOL_ALIGN - 1);
    struct mlr_pool_chunk *c = p->_head;
    if (c == NULL || c->size - c->used < n) {
        size_t size = n > POOL_CHUNK / 2 ? n : POOL_CHUNK;
        c = mlr_xmalloc(sizeof(*c) + size);
        c->size = size;
        c->used = 0;
        /* A big one-off allocation goes behind the current chunk so its free space stays usable. */
        if (size > POOL_CHUNK && p->_head != NULL) {
            c->next = p->_head->next;
            p->_head->next = c;
        } else {
            c->next = p->_head;
            p->_head = c;
        }
    }
    void *out = c->mem + c->used;
    c->used += n;
    return out;
}

char *mlr_pool_strndup(struct mlr_pool *p, const char *s, size_t n)
{
    char *d = mlr_pool_alloc(p, n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *mlr_pool_strdup(struct mlr_pool *p, const char *s)
{
    return mlr_pool_strndup(p, s, strlen(s));
}
