/* Growable byte buffers with a hard cap set at init (curl dynbuf style).
 * Input can never grow a buffer past its cap: appends fail with -ENOBUFS and
 * the caller turns that into a clean protocol error. */
#ifndef SURGE_BASE_BUF_H
#define SURGE_BASE_BUF_H
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

struct buf {
    char *data;      /* NULL until the first append; always NUL-terminated after */
    size_t len;      /* bytes used */
    size_t cap;      /* bytes allocated (excluding the NUL slot) */
    size_t max_size; /* hard cap on len */
};

/* Initialise an empty buffer that will never hold more than max_size bytes. */
void buf_init(struct buf *b, size_t max_size);
/* Make room for `extra` more bytes. 0, or -ENOBUFS when len + extra > max_size. */
int buf_reserve(struct buf *b, size_t extra);
/* Append n bytes. 0, or -ENOBUFS (buffer unchanged). */
int buf_append(struct buf *b, const void *p, size_t n);
/* Append a NUL-terminated string. 0 or -ENOBUFS. */
int buf_puts(struct buf *b, const char *s);
/* printf-style append. 0, or -ENOBUFS (buffer unchanged). */
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* v in decimal at out, without a NUL (at most BUF_U64_DIGITS bytes): its
 * length. No printf, for paths that format many numbers. */
#define BUF_U64_DIGITS 20
size_t buf_u64_text(uint64_t v, char *out);
/* Append v in decimal. 0 or -ENOBUFS. */
int buf_put_u64(struct buf *b, uint64_t v);
/* Drop the first n bytes (n <= len), moving the rest to the front. */
void buf_consume(struct buf *b, size_t n);
/* Empty the buffer but keep its memory. */
void buf_reset(struct buf *b);
/* Release the memory; the buffer is empty and usable again afterwards. */
void buf_free(struct buf *b);

#endif
