/* libFuzzer target for src/http/http.c (STYLE.md habit 18).
 *
 * The first byte chooses the message kind (bit 0), whether a response
 * answers a HEAD request (bit 1) and a split point (bits 2-7, a fraction of
 * the rest). The rest is fed as a caller would, bytes at fixed offsets in one
 * buffer: (a) whole, (b) byte by byte, (c) in two parts split at the chosen
 * point, resetting after each HTTP_EV_DONE, stopping after HTTP_EV_ERROR or
 * after a DONE with HTTP_F_UPGRADE, ending with a len-0 poll and
 * http_msg_eof() when the input stops inside a message. All three must give
 * the same events, heads, raw body byte counts and error status; every call
 * must respect the contract (used <= len, slices inside the head, progress).
 * Any violation aborts. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

struct log {
    char *p;
    size_t len, cap;
};

static void log_add(struct log *l, const char *d, size_t n)
{
    if (l->len + n > l->cap) {
        l->cap = (l->len + n) * 2 + 64;
        l->p = realloc(l->p, l->cap);
        CHECK(l->p != NULL);
    }
    memcpy(l->p + l->len, d, n);
    l->len += n;
}

__attribute__((format(printf, 2, 3))) static void log_printf(struct log *l, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    CHECK(n >= 0 && (size_t)n < sizeof(tmp));
    log_add(l, tmp, (size_t)n);
}

static void log_slice(struct log *l, const char *buf, struct http_slice s, size_t start,
                      size_t head_end)
{
    /* Inside the head that was just reported, hence inside the buffer. */
    CHECK(s.off >= start);
    CHECK((size_t)s.off + s.len <= head_end);
    log_printf(l, "[%u]", s.len);
    log_add(l, buf + s.off, s.len);
}

enum chunking { CH_WHOLE, CH_BYTES, CH_SPLIT };

struct cfg {
    const char *buf; /* exactly len bytes */
    size_t len;
    enum http_kind kind;
    int request_was_head;
};

static size_t next_avail(enum chunking ch, size_t k, size_t avail, size_t len)
{
    if (ch == CH_BYTES)
        return avail + 1;
    if (ch == CH_SPLIT && avail < k)
        return k;
    return len;
}

static void log_head(struct log *l, const struct http_msg *m, const char *buf, size_t start)
{
    size_t head_end = start + m->head_bytes;
    CHECK(m->nheaders <= HTTP_MAX_HEADERS);
    log_printf(l, "HEAD %zu %zu m=%d s=%d v=%d.%d f=%#x cl=%llu t=", start, m->head_bytes,
               m->method, m->status, m->version_major, m->version_minor, m->flags,
               (unsigned long long)m->content_length);
    if (m->kind == HTTP_REQUEST_KIND)
        log_slice(l, buf, m->target, start, head_end);
    for (unsigned i = 0; i < m->nheaders; i++) {
        log_slice(l, buf, m->headers[i].name, start, head_end);
        log_slice(l, buf, m->headers[i].value, start, head_end);
    }
    log_add(l, "\n", 1);
}

static void run(struct log *l, const struct cfg *c, enum chunking ch, size_t k)
{
    const char *buf = c->buf;
    size_t len = c->len;
    struct http_msg *m = malloc(sizeof(*m));
    struct http_header *saved = malloc(sizeof(m->headers));
    CHECK(m && saved);
    http_msg_init(m, c->kind);
    m->request_was_head = c->request_was_head;

    size_t off = 0, avail = 0, start = 0, head_end = 0, calls = 0;
    int fresh = 1, in_body = 0, polled = 0, eof_sent = 0;
    unsigned saved_n = 0, saved_flags = 0;
    for (;;) {
        if (off == avail && avail < len) {
            avail = next_avail(ch, k, avail, len);
            continue;
        }
        size_t give = avail - off;
        int eof = 0;
        if (give == 0) {
            if (in_body && !polled)
                polled = 1;
            else if (!fresh && !eof_sent)
                eof_sent = eof = 1;
            else
                break;
        }
        /* Every call consumes a byte or ends a message of >= 1 byte, but for
         * one poll and one end of stream: anything more is a stuck loop. */
        CHECK(++calls <= 2 * len + 8);
        size_t used = 0;
        int ev;
        if (eof) {
            ev = http_msg_eof(m);
        } else {
            used = (size_t)-1;
            ev = http_msg_feed(m, buf, off, give, &used);
        }
        CHECK(used <= give);
        if (used)
            fresh = 0;
        switch (ev) {
        case HTTP_EV_NEED_MORE:
            CHECK(!eof);
            CHECK(used == give);
            off += used;
            break;
        case HTTP_EV_HEAD:
            CHECK(!in_body);
            CHECK(used > 0);
            off += used;
            head_end = off;
            CHECK(m->head_bytes == head_end - start);
            log_head(l, m, buf, start);
            saved_n = m->nheaders;
            saved_flags = m->flags;
            memcpy(saved, m->headers, saved_n * sizeof(*saved));
            in_body = 1;
            polled = 0;
            break;
        case HTTP_EV_DONE:
            CHECK(in_body);
            off += used;
            /* The head stays as reported until reset. */
            CHECK(m->nheaders == saved_n);
            CHECK(m->flags == saved_flags);
            CHECK(memcmp(m->headers, saved, saved_n * sizeof(*saved)) == 0);
            CHECK(!(m->flags & HTTP_F_NO_BODY) || off == head_end);
            log_printf(l, "DONE %zu %zu\n", off - head_end, off);
            if (m->flags & HTTP_F_UPGRADE)
                goto out;
            http_msg_reset(m);
            m->request_was_head = c->request_was_head;
            start = off;
            fresh = 1;
            in_body = 0;
            break;
        case HTTP_EV_ERROR: {
            CHECK(m->err_status == 400 || m->err_status == 414 || m->err_status == 431 ||
                  m->err_status == 501 || m->err_status == 505);
            CHECK(m->err_reason != NULL);
            log_printf(l, "ERROR %d\n", m->err_status);
            size_t used2 = 1;
            CHECK(http_msg_feed(m, buf, off, avail - off, &used2) == HTTP_EV_ERROR);
            CHECK(used2 == 0);
            CHECK(http_msg_eof(m) == HTTP_EV_ERROR);
            goto out_err;
        }
        default:
            CHECK(!"unknown event");
        }
    }
out:
    /* After an error, how much the failing call took depends on the chunking. */
    log_printf(l, "END %zu\n", off);
out_err:
    free(saved);
    free(m);
}

static void same(const struct log *a, const struct log *b, const char *what)
{
    if (a->len == b->len && memcmp(a->p, b->p, a->len) == 0)
        return;
    fprintf(stderr, "%s differs from whole:\n--- whole\n%.*s\n--- %s\n%.*s\n", what,
            (int)(a->len < 4000 ? a->len : 4000), a->p, what, (int)(b->len < 4000 ? b->len : 4000),
            b->p);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    struct cfg c;
    c.len = size - 1;
    c.kind = (data[0] & 1) ? HTTP_RESPONSE_KIND : HTTP_REQUEST_KIND;
    c.request_was_head = c.kind == HTTP_RESPONSE_KIND && (data[0] & 2);
    size_t k = (size_t)(data[0] >> 2) * c.len / 63;
    /* A copy of exactly the input's size: ASan catches any overread. */
    char *buf = malloc(c.len);
    CHECK(buf != NULL);
    memcpy(buf, data + 1, c.len);
    c.buf = buf;

    struct log whole = {0}, bytes = {0}, split = {0};
    run(&whole, &c, CH_WHOLE, 0);
    run(&bytes, &c, CH_BYTES, 0);
    same(&whole, &bytes, "byte by byte");
    run(&split, &c, CH_SPLIT, k);
    same(&whole, &split, "split");
    free(whole.p);
    free(bytes.p);
    free(split.p);
    free(buf);
    return 0;
}
