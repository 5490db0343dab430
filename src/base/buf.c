#include "base/buf.h"

#include <errno.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"

void buf_init(struct buf *b, size_t max_size)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->max_size = max_size;
}

int buf_reserve(struct buf *b, size_t extra)
{
    if (extra > b->max_size - b->len)
        return -ENOBUFS;
    size_t need = b->len + extra;
    if (need <= b->cap && b->data)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    /* Double without overflowing when max_size is near SIZE_MAX. */
    while (cap < need && cap <= b->max_size / 2)
        cap *= 2;
    if (cap < need || cap > b->max_size)
        cap = b->max_size; /* need <= max_size was checked above */
    /* cap == SIZE_MAX cannot get its NUL slot; ask for SIZE_MAX so that
     * xrealloc fails loudly instead of wrapping to a 0-byte request. */
    b->data = xrealloc(b->data, cap < SIZE_MAX ? cap + 1 : SIZE_MAX);
    b->cap = cap;
    return 0;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
    int rc = buf_reserve(b, n);
    if (rc < 0)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int buf_puts(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
    va_list cp;
    va_copy(cp, ap);
    int n = vsnprintf(NULL, 0, fmt, cp);
    va_end(cp);
    if (n < 0)
        return -EINVAL;
    int rc = buf_reserve(b, (size_t)n);
    if (rc < 0)
        return rc;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void buf_consume(struct buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
    }
    if (b->data)
        b->data[b->len] = '\0';
}

void buf_reset(struct buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

size_t buf_u64_text(uint64_t v, char *out)
{
    char tmp[BUF_U64_DIGITS];
    size_t k = 0, n = 0;
    do {
        tmp[k++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (k)
        out[n++] = tmp[--k];
    return n;
}

int buf_put_u64(struct buf *b, uint64_t v)
{
    char t[BUF_U64_DIGITS];
    return buf_append(b, t, buf_u64_text(v, t));
}
