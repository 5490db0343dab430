/* libFuzzer target for src/http/http.c (every parser of untrusted bytes has one, fed in several
 * chunkings).
 *
 * The first byte chooses the message kind (bit 0), whether a response
 * answers a HEAD request (bit 1) and a split point (bits 2-7, a fraction of
 * the rest). The rest is fed as a caller would, bytes at fixed offsets in one
 * buffer: (a) whole, (b) byte by byte, (c) in two parts split at the chosen
 * point, resetting after each HTTP_EV_DONE, stopping after HTTP_EV_ERROR or
 * after a DONE with HTTP_F_UPGRADE, ending with a len-0 poll and
 * http_msg_eof() when the input stops inside a message. All three must give
 * the same events, heads, payload bytes (on_body), trailers (on_trailer) and
 * error status; every call must respect the contract (used <= len, slices
 * inside the head, body pieces inside the bytes of the call). Before each
 * call, consumed bytes below hold_off are overwritten, so a parser that read
 * them again would answer differently byte by byte than whole.
 *
 * Round trip: every complete message is serialized the way the balancer
 * forwards it (start line rebuilt from the slices, fields as "name: value"
 * CRLF, a chunked body re-chunked canonically from the on_body pieces as
 * "<hex>\r\n<data>\r\n" ... "0\r\n<trailers>\r\n", other bodies as their
 * payload), checked to hold no bare CR or LF outside the payload and no
 * chunk extension, and parsed again in the same three chunkings: it must
 * give the same method token, target, version, status, reason, fields,
 * flags, payload and trailers. Any violation aborts. */
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
    if (n)
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
    size_t max_head_bytes; /* 0: default */
    int roundtrip;         /* serialize and re-parse each complete message */
};

/* What on_body and on_trailer received for the current message. */
struct sink {
    const char *lo, *hi; /* the bytes of the current call */
    struct log payload;  /* the payload bytes */
    struct log chunked;  /* the payload re-chunked, one chunk per piece */
    struct log trailers; /* "name: value\r\n" per trailer */
};

static void on_body_cb(void *arg, const char *p, size_t n)
{
    struct sink *s = arg;
    CHECK(n > 0 && p >= s->lo && p + n <= s->hi);
    log_add(&s->payload, p, n);
    log_printf(&s->chunked, "%zx\r\n", n);
    log_add(&s->chunked, p, n);
    log_add(&s->chunked, "\r\n", 2);
}

static void on_trailer_cb(void *arg, const char *name, size_t name_len, const char *value,
                          size_t value_len)
{
    struct sink *s = arg;
    CHECK(name_len > 0 && name + name_len <= s->hi && value + value_len <= s->hi);
    log_add(&s->trailers, name, name_len);
    log_add(&s->trailers, ": ", 2);
    log_add(&s->trailers, value, value_len);
    log_add(&s->trailers, "\r\n", 2);
}

static size_t next_avail(enum chunking ch, size_t k, size_t avail, size_t len)
{
    if (ch == CH_BYTES)
        return avail + 1;
    if (ch == CH_SPLIT && avail < k)
        return k;
    return len;
}

/* The message as the round trip compares it (no offsets, no raw sizes). */
static void describe(struct log *l, const struct http_msg *m, const char *buf, const struct sink *s)
{
    log_printf(l, "m=%d s=%d v=%d.%d f=%#x cl=%llu", m->method, m->status, m->version_major,
               m->version_minor, m->flags, (unsigned long long)m->content_length);
    log_printf(l, " tok[%u]", m->method_tok.len);
    log_add(l, buf + m->method_tok.off, m->method_tok.len);
    log_printf(l, " t[%u]", m->target.len);
    log_add(l, buf + m->target.off, m->target.len);
    log_printf(l, " r[%u]", m->reason.len);
    log_add(l, buf + m->reason.off, m->reason.len);
    for (unsigned i = 0; i < m->nheaders; i++) {
        log_printf(l, " [%u]", m->headers[i].name.len);
        log_add(l, buf + m->headers[i].name.off, m->headers[i].name.len);
        log_printf(l, "[%u]", m->headers[i].value.len);
        log_add(l, buf + m->headers[i].value.off, m->headers[i].value.len);
    }
    log_printf(l, " p[%zu]", s->payload.len);
    log_add(l, s->payload.p, s->payload.len);
    log_printf(l, " tr[%zu]", s->trailers.len);
    log_add(l, s->trailers.p, s->trailers.len);
}

/* No CR without LF after it, no LF without CR before it, in p[0, n). */
static void check_crlf(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r')
            CHECK(i + 1 < n && p[i + 1] == '\n');
        if (p[i] == '\n')
            CHECK(i > 0 && p[i - 1] == '\r');
    }
}

static void run(struct log *l, const struct cfg *c, enum chunking ch, size_t k);

/* Serialize the message just completed (head slices into buf, body in s)
 * as the balancer forwards it, and parse it again. */
static void roundtrip(const struct cfg *c, const struct http_msg *m, const char *buf,
                      const struct sink *s, size_t k)
{
    struct log out = {0}, want = {0};
    describe(&want, m, buf, s);
    if (m->kind == HTTP_REQUEST_KIND) {
        log_add(&out, buf + m->method_tok.off, m->method_tok.len);
        log_add(&out, " ", 1);
        log_add(&out, buf + m->target.off, m->target.len);
        log_printf(&out, " HTTP/1.%d\r\n", m->version_minor);
    } else {
        log_printf(&out, "HTTP/1.%d %03d ", m->version_minor, m->status);
        log_add(&out, buf + m->reason.off, m->reason.len);
        log_add(&out, "\r\n", 2);
    }
    for (unsigned i = 0; i < m->nheaders; i++) {
        log_add(&out, buf + m->headers[i].name.off, m->headers[i].name.len);
        log_add(&out, ": ", 2);
        log_add(&out, buf + m->headers[i].value.off, m->headers[i].value.len);
        log_add(&out, "\r\n", 2);
    }
    log_add(&out, "\r\n", 2);
    check_crlf(out.p, out.len);
    if (m->flags & HTTP_F_CHUNKED && !(m->flags & HTTP_F_NO_BODY)) {
        /* Canonical chunk lines: hex digits and CRLF, nothing else. */
        for (size_t i = 0; i < s->chunked.len;) {
            size_t n = 0, j = i;
            for (; j < s->chunked.len && s->chunked.p[j] != '\r'; j++) {
                char d = s->chunked.p[j];
                CHECK((d >= '0' && d <= '9') || (d >= 'a' && d <= 'f'));
                n = n * 16 + (size_t)(d <= '9' ? d - '0' : d - 'a' + 10);
            }
            CHECK(j > i && j + 1 < s->chunked.len && s->chunked.p[j + 1] == '\n');
            i = j + 2 + n;
            CHECK(i + 1 < s->chunked.len && s->chunked.p[i] == '\r' && s->chunked.p[i + 1] == '\n');
            i += 2;
        }
        log_add(&out, s->chunked.p, s->chunked.len);
        log_add(&out, "0\r\n", 3);
        check_crlf(s->trailers.p, s->trailers.len);
        log_add(&out, s->trailers.p, s->trailers.len);
        log_add(&out, "\r\n", 2);
    } else {
        log_add(&out, s->payload.p, s->payload.len);
    }

    /* The rebuilt head may be longer than the original (": " and CR added
     * to bare-LF lines): give the re-parse the room. */
    struct cfg c2 = *c;
    c2.buf = out.p;
    c2.len = out.len;
    c2.max_head_bytes = 3 * (out.len + 64);
    c2.roundtrip = 0;
    for (int ch = CH_WHOLE; ch <= CH_SPLIT; ch++) {
        struct log got = {0};
        run(&got, &c2, (enum chunking)ch, out.len ? k % out.len : 0);
        if (got.len != want.len || memcmp(got.p, want.p, want.len) != 0) {
            fprintf(stderr, "round trip (chunking %d) differs:\n--- first\n%.*s\n--- again\n%.*s\n",
                    ch, (int)(want.len < 4000 ? want.len : 4000), want.p,
                    (int)(got.len < 4000 ? got.len : 4000), got.p);
            abort();
        }
        free(got.p);
    }
    free(out.p);
    free(want.p);
}

static void log_head(struct log *l, const struct http_msg *m, const char *buf, size_t start)
{
    size_t head_end = start + m->head_bytes;
    CHECK(m->nheaders <= HTTP_MAX_HEADERS);
    log_printf(l, "HEAD %zu %zu m=%d s=%d v=%d.%d f=%#x cl=%llu t=", start, m->head_bytes,
               m->method, m->status, m->version_major, m->version_minor, m->flags,
               (unsigned long long)m->content_length);
    if (m->kind == HTTP_REQUEST_KIND) {
        log_slice(l, buf, m->method_tok, start, head_end);
        log_slice(l, buf, m->target, start, head_end);
    } else {
        log_slice(l, buf, m->reason, start, head_end);
    }
    for (unsigned i = 0; i < m->nheaders; i++) {
        log_slice(l, buf, m->headers[i].name, start, head_end);
        log_slice(l, buf, m->headers[i].value, start, head_end);
    }
    log_add(l, "\n", 1);
}

/* Feed c's bytes in chunking ch and log the events. With c->roundtrip, every
 * complete message goes through roundtrip(); without it (the re-parse), the
 * log is describe() of the single message expected. */
static void run(struct log *l, const struct cfg *c, enum chunking ch, size_t k)
{
    size_t len = c->len;
    char *buf = malloc(len ? len : 1); /* a copy: bytes below hold_off get overwritten */
    struct http_msg *m = malloc(sizeof(*m));
    struct http_header *saved = malloc(sizeof(m->headers));
    struct sink sink = {0};
    CHECK(buf && m && saved);
    if (len)
        memcpy(buf, c->buf, len);
    http_msg_init(m, c->kind);
    m->request_was_head = c->request_was_head;
    if (c->max_head_bytes)
        m->max_head_bytes = c->max_head_bytes;

    size_t off = 0, avail = 0, start = 0, head_end = 0, calls = 0, poisoned = 0;
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
            size_t low = m->hold_off < off ? m->hold_off : off;
            if (in_body && low > poisoned) {
                memset(buf + poisoned, '~', low - poisoned);
                poisoned = low;
            }
            sink.lo = buf + off;
            sink.hi = buf + off + give;
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
            CHECK(m->hold_off == HTTP_NO_HOLD);
            if (c->roundtrip)
                log_head(l, m, buf, start);
            saved_n = m->nheaders;
            saved_flags = m->flags;
            memcpy(saved, m->headers, saved_n * sizeof(*saved));
            in_body = 1;
            polled = 0;
            m->on_body = on_body_cb;
            m->on_trailer = on_trailer_cb;
            m->body_arg = &sink;
            sink.payload.len = sink.chunked.len = sink.trailers.len = 0;
            break;
        case HTTP_EV_DONE:
            CHECK(in_body);
            off += used;
            /* The head stays as reported until reset. */
            CHECK(m->nheaders == saved_n);
            CHECK(m->flags == saved_flags);
            CHECK(memcmp(m->headers, saved, saved_n * sizeof(*saved)) == 0);
            CHECK(!(m->flags & HTTP_F_NO_BODY) || off == head_end);
            CHECK(!(m->flags & HTTP_F_NO_BODY) || sink.payload.len == 0);
            if (c->roundtrip) {
                log_printf(l, "DONE %zu %zu\n", off - head_end, off);
                log_add(l, sink.payload.p, sink.payload.len);
                log_add(l, sink.trailers.p, sink.trailers.len);
                /* buf's head may be overwritten by now: the slices are
                 * read from the input, at the same offsets. */
                if (ch == CH_WHOLE)
                    roundtrip(c, m, c->buf, &sink, k);
            } else {
                /* A re-parse: exactly one message, all of the input. */
                CHECK(off == len);
                describe(l, m, c->buf, &sink);
                goto out_err;
            }
            if (m->flags & HTTP_F_UPGRADE)
                goto out;
            http_msg_reset(m);
            m->request_was_head = c->request_was_head;
            if (c->max_head_bytes)
                m->max_head_bytes = c->max_head_bytes;
            start = off;
            fresh = 1;
            in_body = 0;
            break;
        case HTTP_EV_ERROR: {
            CHECK(c->roundtrip); /* what we serialize must parse */
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
    /* A re-parse must have completed its message. */
    CHECK(c->roundtrip);
    /* After an error, how much the failing call took depends on the chunking. */
    log_printf(l, "END %zu\n", off);
out_err:
    free(sink.payload.p);
    free(sink.chunked.p);
    free(sink.trailers.p);
    free(saved);
    free(m);
    free(buf);
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
    struct cfg c = {0};
    c.len = size - 1;
    c.kind = (data[0] & 1) ? HTTP_RESPONSE_KIND : HTTP_REQUEST_KIND;
    c.request_was_head = c.kind == HTTP_RESPONSE_KIND && (data[0] & 2);
    c.roundtrip = 1;
    size_t k = (size_t)(data[0] >> 2) * c.len / 63;
    c.buf = (const char *)data + 1;

    struct log whole = {0}, bytes = {0}, split = {0};
    run(&whole, &c, CH_WHOLE, k);
    run(&bytes, &c, CH_BYTES, 0);
    same(&whole, &bytes, "byte by byte");
    run(&split, &c, CH_SPLIT, k);
    same(&whole, &split, "split");
    free(whole.p);
    free(bytes.p);
    free(split.p);
    return 0;
}
