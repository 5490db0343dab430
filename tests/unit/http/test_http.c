/* Unit tests for src/http/http.c: incremental HTTP/1.1 parsing.
 *
 * Every input goes through one harness that plays the caller: the bytes stay
 * in one buffer at fixed offsets and arrive in segments (whole, byte by byte,
 * or split in two at a position k). The harness records the events (heads,
 * raw body byte counts, DONEs, the error status) as a text log, checks the
 * contract on every call, and check() asserts that every chunking gives the
 * same log as the whole input. It also collects the body's payload (on_body)
 * and trailers (on_trailer), checks that every piece points into the bytes
 * of the current call, and overwrites consumed bytes below hold_off before
 * each call, so a parser that read them again would answer differently
 * byte by byte than whole. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"

/* Criterion's eq(str, ...) wants char *, which -Wwrite-strings literals are not. */
#define assert_str(got, want)                                                                      \
    cr_assert(strcmp((got), (want)) == 0, "got \"%s\" want \"%s\"", (got), (want))

#define MAX_MSGS 8

struct rec_msg {
    int method, status, version_major, version_minor;
    char *target; /* NUL-terminated copies */
    char *method_tok, *reason;
    char *payload; /* on_body bytes, payload_len of them (+ a NUL) */
    size_t payload_len;
    char *trailers; /* "name=[value]\n" per on_trailer call */
    unsigned nheaders;
    char *names[HTTP_MAX_HEADERS];
    char *values[HTTP_MAX_HEADERS];
    unsigned flags;
    uint64_t content_length;
    size_t start;      /* offset of the message's first byte */
    size_t head_bytes; /* m->head_bytes at HTTP_EV_HEAD */
    size_t body_bytes; /* sum of `used` after the head, up to HTTP_EV_DONE */
    size_t end;        /* offset right after the message */
    int done;
};

struct rec {
    unsigned nmsgs; /* heads seen */
    unsigned ndone;
    struct rec_msg msgs[MAX_MSGS];
    int err_status; /* 0: no error */
    const char *err_reason;
    size_t consumed; /* bytes consumed in total */
    char *log;       /* every event, to compare chunkings */
    size_t log_len, log_cap;
};

struct opts {
    enum http_kind kind;
    int request_was_head;                 /* set after every init/reset */
    int no_eof;                           /* don't signal end of stream after the input */
    size_t max_head_bytes, max_uri_bytes; /* 0: default */
};

static const struct opts req_opts = {.kind = HTTP_REQUEST_KIND};
static const struct opts res_opts = {.kind = HTTP_RESPONSE_KIND};

enum chunking { CH_WHOLE, CH_BYTES, CH_SPLIT };

__attribute__((format(printf, 2, 3))) static void rec_log(struct rec *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    cr_assert(ge(int, n, 0));
    if (r->log_len + (size_t)n + 1 > r->log_cap) {
        r->log_cap = (r->log_len + (size_t)n + 1) * 2;
        r->log = realloc(r->log, r->log_cap);
        cr_assert(ne(ptr, r->log, NULL));
    }
    va_start(ap, fmt);
    vsnprintf(r->log + r->log_len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    r->log_len += (size_t)n;
}

static char *dup_slice(const char *buf, struct http_slice s)
{
    char *p = malloc((size_t)s.len + 1);
    cr_assert(ne(ptr, p, NULL));
    memcpy(p, buf + s.off, s.len);
    p[s.len] = '\0';
    return p;
}

/* A slice must lie inside the message's head. */
static void check_slice(struct http_slice s, size_t start, size_t head_end)
{
    cr_assert(ge(sz, (size_t)s.off, start), "slice at %u before the head at %zu", s.off, start);
    cr_assert(le(sz, (size_t)s.off + s.len, head_end), "slice %u+%u past the head end %zu", s.off,
              s.len, head_end);
}

static void rec_free(struct rec *r)
{
    for (unsigned i = 0; i < r->nmsgs && i < MAX_MSGS; i++) {
        struct rec_msg *rm = &r->msgs[i];
        free(rm->target);
        free(rm->method_tok);
        free(rm->reason);
        free(rm->payload);
        free(rm->trailers);
        for (unsigned h = 0; h < rm->nheaders; h++) {
            free(rm->names[h]);
            free(rm->values[h]);
        }
    }
    free(r->log);
    memset(r, 0, sizeof(*r));
}

static void record_head(struct rec *r, const struct http_msg *m, const char *buf, size_t start)
{
    size_t head_end = start + m->head_bytes;
    if (m->kind == HTTP_REQUEST_KIND)
        check_slice(m->target, start, head_end);
    cr_assert(le(uint, m->nheaders, HTTP_MAX_HEADERS));
    rec_log(r, "HEAD start=%zu bytes=%zu method=%d status=%d version=%d.%d flags=%#x cl=%llu ",
            start, m->head_bytes, m->method, m->status, m->version_major, m->version_minor,
            m->flags, (unsigned long long)m->content_length);
    rec_log(r, "target=[%.*s] n=%u\n", (int)m->target.len, buf + m->target.off, m->nheaders);
    for (unsigned i = 0; i < m->nheaders; i++) {
        check_slice(m->headers[i].name, start, head_end);
        check_slice(m->headers[i].value, start, head_end);
        rec_log(r, "  [%.*s]=[%.*s]\n", (int)m->headers[i].name.len, buf + m->headers[i].name.off,
                (int)m->headers[i].value.len, buf + m->headers[i].value.off);
    }
    rec_log(r, "  method=[%.*s] reason=[%.*s]\n", (int)m->method_tok.len, buf + m->method_tok.off,
            (int)m->reason.len, buf + m->reason.off);
    if (r->nmsgs < MAX_MSGS) {
        struct rec_msg *rm = &r->msgs[r->nmsgs];
        rm->method_tok = dup_slice(buf, m->method_tok);
        rm->reason = dup_slice(buf, m->reason);
        rm->method = m->method;
        rm->status = m->status;
        rm->version_major = m->version_major;
        rm->version_minor = m->version_minor;
        rm->target = dup_slice(buf, m->target);
        rm->nheaders = m->nheaders;
        for (unsigned i = 0; i < m->nheaders; i++) {
            rm->names[i] = dup_slice(buf, m->headers[i].name);
            rm->values[i] = dup_slice(buf, m->headers[i].value);
        }
        rm->flags = m->flags;
        rm->content_length = m->content_length;
        rm->start = start;
        rm->head_bytes = m->head_bytes;
    }
    r->nmsgs++;
}

/* What on_body and on_trailer received for the current message. */
struct sink {
    const char *lo, *hi; /* the bytes of the current call */
    char *payload;
    size_t payload_len, payload_cap;
    char *trailers;
    size_t trailers_len, trailers_cap;
};

static void sink_add(char **p, size_t *len, size_t *cap, const char *d, size_t n)
{
    if (*len + n + 1 > *cap) {
        *cap = (*len + n + 1) * 2;
        *p = realloc(*p, *cap);
        cr_assert(ne(ptr, *p, NULL));
    }
    memcpy(*p + *len, d, n);
    *len += n;
    (*p)[*len] = '\0';
}

static void on_body_cb(void *arg, const char *p, size_t n)
{
    struct sink *s = arg;
    cr_assert(n > 0 && p >= s->lo && p + n <= s->hi, "body piece outside the current call's bytes");
    sink_add(&s->payload, &s->payload_len, &s->payload_cap, p, n);
}

static void on_trailer_cb(void *arg, const char *name, size_t name_len, const char *value,
                          size_t value_len)
{
    struct sink *s = arg;
    /* The line may have started in an earlier call: below hi is all we know. */
    cr_assert(name_len > 0 && name + name_len <= s->hi && value + value_len <= s->hi);
    cr_assert(value_len == 0 || (value[0] != ' ' && value[value_len - 1] != ' '));
    sink_add(&s->trailers, &s->trailers_len, &s->trailers_cap, name, name_len);
    sink_add(&s->trailers, &s->trailers_len, &s->trailers_cap, "=[", 2);
    sink_add(&s->trailers, &s->trailers_len, &s->trailers_cap, value, value_len);
    sink_add(&s->trailers, &s->trailers_len, &s->trailers_cap, "]\n", 2);
}

static size_t next_avail(enum chunking ch, size_t k, size_t avail, size_t len)
{
    if (ch == CH_BYTES)
        return avail + 1;
    if (ch == CH_SPLIT && avail < k)
        return k;
    return len;
}

/* Feed in[0, len) as the caller would, in chunking ch, and record the events. */
static void run(struct rec *r, const char *in, size_t len, const struct opts *o, enum chunking ch,
                size_t k)
{
    memset(r, 0, sizeof(*r));
    char *buf = malloc(len ? len : 1); /* exact size: ASan sees any overread */
    struct http_msg *m = malloc(sizeof(*m));
    struct http_header *saved = malloc(sizeof(m->headers));
    struct sink sink = {0};
    size_t poisoned = 0; /* buf[0, poisoned) was overwritten */
    cr_assert(buf && m && saved);
    memcpy(buf, in, len);
    http_msg_init(m, o->kind);
    if (o->max_head_bytes)
        m->max_head_bytes = o->max_head_bytes;
    if (o->max_uri_bytes)
        m->max_uri_bytes = o->max_uri_bytes;
    m->request_was_head = o->request_was_head;

    size_t off = 0, avail = 0, start = 0, head_end = 0, calls = 0;
    int fresh = 1, in_body = 0, polled = 0, eof_sent = 0;
    unsigned saved_n = 0, saved_flags = 0;
    struct http_slice saved_target = {0, 0};
    for (;;) {
        if (off == avail && avail < len) {
            avail = next_avail(ch, k, avail, len);
            continue;
        }
        size_t give = avail - off;
        int eof = 0;
        if (give == 0) {
            /* End of the input: a head may end a message without a body
             * (polled with len 0); then close the stream, but only inside a
             * message. */
            if (in_body && !polled) {
                polled = 1;
            } else if (!o->no_eof && !fresh && !eof_sent) {
                eof_sent = eof = 1;
            } else {
                break;
            }
        }
        /* Each call consumes a byte or ends a message (which took >= 1 byte),
         * except one poll and one end of stream. */
        cr_assert(le(sz, ++calls, 2 * len + 8), "feeding loop does not progress");
        size_t used = 0;
        int ev;
        if (eof) {
            ev = http_msg_eof(m);
        } else {
            /* Consumed bytes the parser holds no more may be gone. */
            size_t low = m->hold_off < off ? m->hold_off : off;
            if (in_body && low > poisoned) {
                memset(buf + poisoned, '~', low - poisoned);
                poisoned = low;
            }
            sink.lo = buf + off;
            sink.hi = buf + off + give;
            used = 0xdead;
            ev = http_msg_feed(m, buf, off, give, &used);
        }
        cr_assert(le(sz, used, give), "used %zu of %zu given (event %d)", used, give, ev);
        if (used)
            fresh = 0;
        switch (ev) {
        case HTTP_EV_NEED_MORE:
            cr_assert(eq(int, eof, 0), "NEED_MORE after end of stream");
            cr_assert(eq(sz, used, give));
            off += used;
            break;
        case HTTP_EV_HEAD:
            cr_assert(eq(int, in_body, 0), "second HEAD without DONE");
            off += used;
            head_end = off;
            cr_assert(eq(sz, m->head_bytes, head_end - start));
            record_head(r, m, buf, start);
            saved_n = m->nheaders;
            saved_flags = m->flags;
            saved_target = m->target;
            memcpy(saved, m->headers, saved_n * sizeof(*saved));
            in_body = 1;
            polled = 0;
            cr_assert(eq(sz, m->hold_off, HTTP_NO_HOLD));
            m->on_body = on_body_cb;
            m->on_trailer = on_trailer_cb;
            m->body_arg = &sink;
            sink.payload_len = sink.trailers_len = 0;
            break;
        case HTTP_EV_DONE:
            cr_assert(in_body, "DONE without HEAD");
            off += used;
            /* The head stays valid until reset: the body must not change it. */
            cr_assert(eq(uint, m->nheaders, saved_n));
            cr_assert(eq(uint, m->flags, saved_flags));
            cr_assert(eq(u32, m->target.off, saved_target.off));
            cr_assert(eq(u32, m->target.len, saved_target.len));
            cr_assert(memcmp(m->headers, saved, saved_n * sizeof(*saved)) == 0,
                      "headers changed between HEAD and DONE");
            rec_log(r, "DONE body=%zu end=%zu payload=%zu trailers=%zu\n", off - head_end, off,
                    sink.payload_len, sink.trailers_len);
            if (sink.payload_len)
                rec_log(r, "  payload=[%.*s]\n", (int)sink.payload_len, sink.payload);
            if (sink.trailers_len)
                rec_log(r, "%.*s", (int)sink.trailers_len, sink.trailers);
            if (r->nmsgs && r->nmsgs <= MAX_MSGS) {
                struct rec_msg *rm = &r->msgs[r->nmsgs - 1];
                rm->payload = malloc(sink.payload_len + 1);
                cr_assert(ne(ptr, rm->payload, NULL));
                if (sink.payload_len)
                    memcpy(rm->payload, sink.payload, sink.payload_len);
                rm->payload[sink.payload_len] = '\0';
                rm->payload_len = sink.payload_len;
                rm->trailers = strdup(sink.trailers_len ? sink.trailers : "");
                rm->body_bytes = off - head_end;
                rm->end = off;
                rm->done = 1;
            }
            r->ndone++;
            if (m->flags & HTTP_F_UPGRADE)
                goto out; /* the rest is another protocol */
            http_msg_reset(m);
            m->request_was_head = o->request_was_head;
            start = off;
            fresh = 1;
            in_body = 0;
            break;
        case HTTP_EV_ERROR: {
            r->err_status = m->err_status;
            r->err_reason = m->err_reason;
            cr_assert(ne(int, m->err_status, 0));
            cr_assert(ne(ptr, (void *)m->err_reason, NULL));
            rec_log(r, "ERROR %d\n", m->err_status);
            size_t used2 = 0xdead;
            cr_assert(eq(int, http_msg_feed(m, buf, off, avail - off, &used2), HTTP_EV_ERROR),
                      "feeding after an error must fail again");
            cr_assert(eq(sz, used2, 0));
            cr_assert(eq(int, http_msg_eof(m), HTTP_EV_ERROR));
            goto out;
        }
        default:
            cr_fail("unknown event %d", ev);
        }
    }
out:
    r->consumed = off;
    /* After an error, how much the failing call took depends on the chunking. */
    if (!r->err_status)
        rec_log(r, "END consumed=%zu\n", off);
    free(sink.payload);
    free(sink.trailers);
    free(saved);
    free(m);
    free(buf);
}

static const char *chunking_name(enum chunking ch)
{
    return ch == CH_WHOLE ? "whole" : ch == CH_BYTES ? "byte by byte" : "split";
}

static void compare(const struct rec *want, const struct rec *got, enum chunking ch, size_t k)
{
    int same = want->log_len == got->log_len && memcmp(want->log, got->log, want->log_len) == 0;
    cr_assert(same, "%s (k=%zu) differs from whole:\n--- whole\n%.*s\n--- %s\n%.*s",
              chunking_name(ch), k, (int)(want->log_len < 3000 ? want->log_len : 3000), want->log,
              chunking_name(ch), (int)(got->log_len < 3000 ? got->log_len : 3000), got->log);
}

/* Run every chunking (every split point, or a sample of them when `sample`)
 * and leave the whole-input result in *r. */
static void check_n(struct rec *r, const char *in, size_t len, const struct opts *o, int sample)
{
    struct rec *got = malloc(sizeof(*got));
    cr_assert(ne(ptr, got, NULL));
    run(r, in, len, o, CH_WHOLE, 0);
    run(got, in, len, o, CH_BYTES, 0);
    compare(r, got, CH_BYTES, 0);
    rec_free(got);
    for (size_t k = 1; k < len; k++) {
        if (sample && !(k < 4 || k + 4 > len || k % 997 == 0 || k == len / 2))
            continue;
        run(got, in, len, o, CH_SPLIT, k);
        compare(r, got, CH_SPLIT, k);
        rec_free(got);
    }
    free(got);
}

#define check(r, lit, o)        check_n((r), (lit), sizeof(lit) - 1, (o), 0)
#define check_str(r, str, o)    check_n((r), (str), strlen(str), (o), 0)
#define check_big(r, str, n, o) check_n((r), (str), (n), (o), 1)

/* Expect one error with `status` and no complete message. */
static void expect_error(const char *in, size_t len, const struct opts *o, int status)
{
    struct rec r;
    check_n(&r, in, len, o, len > 2000);
    cr_assert(eq(int, r.err_status, status), "input [%.*s]: status %d (%s), want %d",
              (int)(len < 200 ? len : 200), in, r.err_status,
              r.err_reason ? r.err_reason : "no error", status);
    rec_free(&r);
}

#define reject(lit, status)     expect_error((lit), sizeof(lit) - 1, &req_opts, (status))
#define reject_res(lit, status) expect_error((lit), sizeof(lit) - 1, &res_opts, (status))

static void assert_header(const struct rec_msg *rm, unsigned i, const char *name, const char *value)
{
    cr_assert(lt(uint, i, rm->nheaders));
    assert_str(rm->names[i], name);
    assert_str(rm->values[i], value);
}

/* One message, complete, no error. */
static const struct rec_msg *only_msg(const struct rec *r)
{
    cr_assert(eq(int, r->err_status, 0), "unexpected error %d (%s)", r->err_status,
              r->err_reason ? r->err_reason : "");
    cr_assert(eq(uint, r->nmsgs, 1));
    cr_assert(eq(uint, r->ndone, 1));
    return &r->msgs[0];
}

/* ---- requests ---------------------------------------------------------- */

Test(http, simple_get)
{
    static const char in[] =
        "GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t/1\r\n\r\n";
    struct rec r;
    check(&r, in, &req_opts);
    const struct rec_msg *rm = only_msg(&r);
    cr_assert(eq(int, rm->method, HTTP_M_GET));
    assert_str(rm->target, "/index.html?q=1");
    cr_assert(eq(int, rm->version_major, 1));
    cr_assert(eq(int, rm->version_minor, 1));
    cr_assert(eq(uint, rm->nheaders, 2));
    assert_header(rm, 0, "Host", "example.com");
    assert_header(rm, 1, "User-Agent", "t/1");
    cr_assert(eq(uint, rm->flags, HTTP_F_KEEP_ALIVE | HTTP_F_NO_BODY));
    cr_assert(eq(sz, rm->head_bytes, sizeof(in) - 1));
    cr_assert(eq(sz, rm->body_bytes, 0));
    cr_assert(eq(sz, rm->end, sizeof(in) - 1));
    cr_assert(eq(sz, r.consumed, sizeof(in) - 1));
    assert_str(http_method_name(rm->method), "GET");
    rec_free(&r);
}

Test(http, get_without_eof_completes_on_poll)
{
    /* HTTP_EV_HEAD ends the call; a message without a body is DONE on the
     * next one, which may have len 0 (no end of stream needed). */
    static const char in[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    struct rec r;
    struct opts o = req_opts;
    o.no_eof = 1;
    check(&r, in, &o);
    only_msg(&r);
    cr_assert(eq(sz, r.consumed, sizeof(in) - 1));
    rec_free(&r);
}

Test(http, post_with_content_length)
{
    static const char in[] = "POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n"
                             "hello world";
    struct rec r;
    check(&r, in, &req_opts);
    const struct rec_msg *rm = only_msg(&r);
    cr_assert(eq(int, rm->method, HTTP_M_POST));
    cr_assert(eq(uint, rm->flags, HTTP_F_LENGTH | HTTP_F_KEEP_ALIVE));
    cr_assert(eq(u64, rm->content_length, 11));
    cr_assert(eq(sz, rm->head_bytes, sizeof(in) - 1 - 11));
    cr_assert(eq(sz, rm->body_bytes, 11));
    rec_free(&r);
}

Test(http, post_with_zero_content_length_has_no_body)
{
    struct rec r;
    check(&r, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", &req_opts);
    const struct rec_msg *rm = only_msg(&r);
    cr_assert(eq(uint, rm->flags, HTTP_F_LENGTH | HTTP_F_KEEP_ALIVE | HTTP_F_NO_BODY));
    cr_assert(eq(sz, rm->body_bytes, 0));
    rec_free(&r);
}

Test(http, chunked_body_counts_framing)
{
    static const char in[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "3\r\nabc\r\n0\r\n\r\n";
    struct rec r;
    check(&r, in, &req_opts);
    const struct rec_msg *rm = only_msg(&r);
    cr_assert(eq(uint, rm->flags, HTTP_F_CHUNKED | HTTP_F_KEEP_ALIVE));
    cr_assert(eq(sz, rm->body_bytes, 13));
    cr_assert(eq(sz, rm->end, sizeof(in) - 1));
    rec_free(&r);
}

Test(http, chunk_extensions_and_trailers)
{
    static const char body[] = "5;name=value\r\nhello\r\n"
                               "A ; a=1;b=\"x\"\r\n0123456789\r\n"
                               "0;last\r\nX-Trailer: t\r\nX-Sum: 42\r\n\r\n";
    static const char in[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                             "X-Last: v\r\n\r\n"
                             "5;name=value\r\nhello\r\n"
                             "A ; a=1;b=\"x\"\r\n0123456789\r\n"
                             "0;last\r\nX-Trailer: t\r\nX-Sum: 42\r\n\r\n";
    struct rec r;
    check(&r, in, &req_opts);
    const struct rec_msg *rm = only_msg(&r);
    cr_assert(eq(sz, rm->body_bytes, sizeof(body) - 1));
    /* Trailers are body bytes: they do not join the head's header list
     * (the harness also checks the list is unchanged at DONE). */
    cr_assert(eq(uint, rm->nheaders, 3));
    assert_header(rm, 2, "X-Last", "v");
    rec_free(&r);
}

Test(http, trailers_after_many_headers)
{
    /* A full header list plus trailers: the trailers must not count. */
    char in[8192];
    size_t n = (size_t)snprintf(in, sizeof(in),
                                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n");
    for (int i = 2; i < HTTP_MAX_HEADERS; i++)
        n += (size_t)snprintf(in + n, sizeof(in) - n, "X-%d: %d\r\n", i, i);
    n += (size_t)snprintf(in + n, sizeof(in) - n, "\r\n1\r\nx\r\n0\r\nT-1: a\r\nT-2: b\r\n\r\n");
    struct rec r;
    check_big(&r, in, n, &req_opts);
    const struct rec_msg *rm = only_msg(&r);
    cr_assert(eq(uint, rm->nheaders, HTTP_MAX_HEADERS));
    cr_assert(eq(sz, rm->end, n));
    rec_free(&r);
}

Test(http, invalid_trailer_is_rejected)
{
    reject("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
           "0\r\nBad Name: x\r\n\r\n",
           400);
    reject("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
           "0\r\nT: a\r\n folded\r\n\r\n",
           400);
}

Test(http, pipelined_requests_in_one_buffer)
{
    static const char get1[] = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n";
    static const char post[] = "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody";
    static const char get3[] = "GET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    static const char in[] = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
                             "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody"
                             "GET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    struct rec r;
    check(&r, in, &req_opts);
    cr_assert(eq(int, r.err_status, 0));
    cr_assert(eq(uint, r.nmsgs, 3));
    cr_assert(eq(uint, r.ndone, 3));
    size_t l1 = sizeof(get1) - 1, l2 = sizeof(post) - 1, l3 = sizeof(get3) - 1;
    assert_str(r.msgs[0].target, "/1");
    cr_assert(eq(int, r.msgs[0].method, HTTP_M_GET));
    cr_assert(eq(sz, r.msgs[0].start, 0));
    cr_assert(eq(sz, r.msgs[0].head_bytes, l1));
    cr_assert(eq(sz, r.msgs[0].end, l1));
    assert_str(r.msgs[1].target, "/2");
    cr_assert(eq(int, r.msgs[1].method, HTTP_M_POST));
    cr_assert(eq(sz, r.msgs[1].start, l1));
    cr_assert(eq(sz, r.msgs[1].head_bytes, l2 - 4));
    cr_assert(eq(sz, r.msgs[1].body_bytes, 4));
    cr_assert(eq(sz, r.msgs[1].end, l1 + l2));
    assert_str(r.msgs[2].target, "/3");
    cr_assert(eq(sz, r.msgs[2].start, l1 + l2));
    cr_assert(eq(sz, r.msgs[2].head_bytes, l3));
    cr_assert(eq(sz, r.msgs[2].end, l1 + l2 + l3));
    cr_assert(eq(uint, r.msgs[0].flags & HTTP_F_KEEP_ALIVE, HTTP_F_KEEP_ALIVE));
    cr_assert(eq(uint, r.msgs[2].flags & HTTP_F_KEEP_ALIVE, 0));
    rec_free(&r);
}

Test(http, pipelined_chunked_then_get)
{
    static const char in[] = "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "2\r\nab\r\n0\r\n\r\n"
                             "GET /n HTTP/1.1\r\nHost: a\r\n\r\n";
    struct rec r;
    check(&r, in, &req_opts);
    cr_assert(eq(uint, r.ndone, 2));
    cr_assert(eq(sz, r.msgs[0].body_bytes, 12));
    assert_str(r.msgs[1].target, "/n");
    cr_assert(eq(sz, r.msgs[1].start, r.msgs[0].end));
    cr_assert(eq(sz, r.msgs[1].end, sizeof(in) - 1));
    rec_free(&r);
}

Test(http, leading_empty_lines_count_in_head)
{
    static const char in[] = "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    struct rec r;
    check(&r, in, &req_opts);
    const struct rec_msg *rm = only_msg(&r);
    cr_assert(eq(sz, rm->head_bytes, sizeof(in) - 1));
    rec_free(&r);
}

Test(http, http10_closes_unless_keep_alive)
{
    struct rec r;
    check(&r, "GET / HTTP/1.0\r\n\r\n", &req_opts);
    const struct rec_msg *rm = only_msg(&r);
    cr_assert(eq(int, rm->version_major, 1));
    cr_assert(eq(int, rm->version_minor, 0));
    cr_assert(eq(uint, rm->flags, HTTP_F_NO_BODY));
    rec_free(&r);

    check(&r, "GET / HTTP/1.0\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n", &req_opts);
    rm = only_msg(&r);
    cr_assert(eq(uint, rm->flags, HTTP_F_NO_BODY | HTTP_F_KEEP_ALIVE));
    rec_free(&r);

    check(&r, "GET / HTTP/1.0\r\nConnection: foo, keep-alive , bar\r\n\r\n", &req_opts);
    rm = only_msg(&r);
    cr_assert(eq(uint, rm->flags & HTTP_F_KEEP_ALIVE, HTTP_F_KEEP_ALIVE));
    rec_free(&r);
}

Test(http, connection_close)
{
    struct rec r;
    check(&r, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", &req_opts);
    cr_assert(eq(uint, only_msg(&r)->flags, HTTP_F_NO_BODY));
    rec_free(&r);

    check(&r, "GET / HTTP/1.1\r\nHost: a\r\nConnection: TE, Close\r\n\r\n", &req_opts);
    cr_assert(eq(uint, only_msg(&r)->flags & HTTP_F_KEEP_ALIVE, 0));
    rec_free(&r);

    /* "close" only as a whole token */
    check(&r, "GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n", &req_opts);
    cr_assert(eq(uint, only_msg(&r)->flags & HTTP_F_KEEP_ALIVE, HTTP_F_KEEP_ALIVE));
    rec_free(&r);
}

Test(http, keep_alive_flags)
{
    struct rec r;
    check(&r, "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", &req_opts);
    cr_assert(eq(uint, only_msg(&r)->flags, HTTP_F_KEEP_ALIVE | HTTP_F_NO_BODY));
    rec_free(&r);

    /* close wins over keep-alive */
    check(&r, "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
          &req_opts);
    cr_assert(eq(uint, only_msg(&r)->flags & HTTP_F_KEEP_ALIVE, 0));
    rec_free(&r);
}

Test(http, upgrade_needs_connection_upgrade)
{
    static const char in[] = "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                             "Connection: keep-alive, Upgrade\r\n\r\n";
    static const char in_frames[] = "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                                    "Connection: keep-alive, Upgrade\r\n\r\n"
                                    "\x81\x05hello";
    struct rec r;
    check(&r, in, &req_opts);
    cr_assert(eq(uint, only_msg(&r)->flags & HTTP_F_UPGRADE, HTTP_F_UPGRADE));
    rec_free(&r);

    /* The bytes after the head belong to the new protocol: not consumed. */
    check(&r, in_frames, &req_opts);
    cr_assert(eq(uint, only_msg(&r)->flags & HTTP_F_UPGRADE, HTTP_F_UPGRADE));
    cr_assert(eq(sz, r.consumed, sizeof(in) - 1));
    rec_free(&r);

    check(&r, "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", &req_opts);
    cr_assert(eq(uint, only_msg(&r)->flags & HTTP_F_UPGRADE, 0));
    rec_free(&r);

    check(&r, "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n", &req_opts);
    cr_assert(eq(uint, only_msg(&r)->flags & HTTP_F_UPGRADE, 0));
    rec_free(&r);
}

Test(http, expect_100_continue)
{
    struct rec r;
    check(&r, "PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\nok",
          &req_opts);
    const struct rec_msg *rm = only_msg(&r);
    cr_assert(eq(uint, rm->flags & HTTP_F_EXPECT_100, HTTP_F_EXPECT_100));
    cr_assert(eq(sz, rm->body_bytes, 2));
    cr_assert(eq(int, rm->method, HTTP_M_PUT));
    rec_free(&r);

    check(&r, "PUT /f HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", &req_opts);
    cr_assert(eq(uint, only_msg(&r)->flags & HTTP_F_EXPECT_100, 0));
    rec_free(&r);
}

Test(http, header_values_are_trimmed)
{
    struct rec r;
    check(&r, "GET / HTTP/1.1\r\nHost:a\r\nX-A:   v w \t \r\nX-B:\t\tx\t\r\n\r\n", &req_opts);
    const struct rec_msg *rm = only_msg(&r);
    cr_assert(eq(uint, rm->nheaders, 3));
    assert_header(rm, 0, "Host", "a");
    assert_header(rm, 1, "X-A", "v w");
    assert_header(rm, 2, "X-B", "x");
    rec_free(&r);
}

Test(http, empty_header_value_then_another_header)
{
    struct rec r;
    check(&r, "GET / HTTP/1.1\r\nHost: a\r\nX:\r\nY: 1\r\nZ:   \r\n\r\n", &req_opts);
    const struct rec_msg *rm = only_msg(&r);
    cr_assert(eq(uint, rm->nheaders, 4));
    assert_header(rm, 1, "X", "");
    assert_header(rm, 2, "Y", "1");
    assert_header(rm, 3, "Z", "");
    rec_free(&r);
}

Test(http, many_headers_up_to_the_limit)
{
    char in[8192];
    size_t n = (size_t)snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 1; i < HTTP_MAX_HEADERS; i++)
        n += (size_t)snprintf(in + n, sizeof(in) - n, "X-H%d: v%d\r\n", i, i);
    n += (size_t)snprintf(in + n, sizeof(in) - n, "\r\n");
    struct rec r;
    check_big(&r, in, n, &req_opts);
    const struct rec_msg *rm = only_msg(&r);
    cr_assert(eq(uint, rm->nheaders, HTTP_MAX_HEADERS));
    assert_header(rm, HTTP_MAX_HEADERS - 1, "X-H127", "v127");
    rec_free(&r);
}

Test(http, http_list_has_tokens)
{
    static const char b[] = "keep-alive, Upgrade ,\tclose\t, , x-y";
    struct http_slice all = {0, sizeof(b) - 1};
    cr_assert(eq(int, http_list_has(b, all, "keep-alive"), 1));
    cr_assert(eq(int, http_list_has(b, all, "upgrade"), 1));
    cr_assert(eq(int, http_list_has(b, all, "close"), 1));
    cr_assert(eq(int, http_list_has(b, all, "x-y"), 1));
    cr_assert(eq(int, http_list_has(b, all, "keep"), 0));
    cr_assert(eq(int, http_list_has(b, all, "alive"), 0));
    cr_assert(eq(int, http_list_has(b, all, "upgrade ,"), 0));
    cr_assert(eq(int, http_list_has(b, all, "x"), 0));
    /* Only inside the slice */
    struct http_slice first = {0, 10};
    cr_assert(eq(int, http_list_has(b, first, "keep-alive"), 1));
    cr_assert(eq(int, http_list_has(b, first, "close"), 0));
    struct http_slice cut = {0, 8};
    cr_assert(eq(int, http_list_has(b, cut, "keep-alive"), 0));
    struct http_slice empty = {3, 0};
    cr_assert(eq(int, http_list_has(b, empty, "keep-alive"), 0));
    static const char single[] = "CLOSE";
    cr_assert(eq(int, http_list_has(single, (struct http_slice){0, 5}, "close"), 1));
}

Test(http, http_header_is_ignores_case)
{
    struct http_msg m;
    static const char b[] = "Content-LENGTH";
    http_msg_init(&m, HTTP_REQUEST_KIND);
    m.headers[0].name = (struct http_slice){0, sizeof(b) - 1};
    m.nheaders = 1;
    cr_assert(eq(int, http_header_is(&m, b, 0, "content-length"), 1));
    cr_assert(eq(int, http_header_is(&m, b, 0, "content-lengt"), 0));
    cr_assert(eq(int, http_header_is(&m, b, 0, "content-lengths"), 0));
}

Test(http, status_text)
{
    assert_str(http_status_text(404), "Not Found");
    assert_str(http_status_text(200), "OK");
    assert_str(http_status_text(431), "Request Header Fields Too Large");
    assert_str(http_status_text(502), "Bad Gateway");
    assert_str(http_status_text(799), "Unknown");
    assert_str(http_status_text(-1), "Unknown");
}

Test(http, method_idempotent)
{
    static const int yes[] = {HTTP_M_GET,    HTTP_M_HEAD,    HTTP_M_PUT,
                              HTTP_M_DELETE, HTTP_M_OPTIONS, HTTP_M_TRACE};
    static const int no[] = {HTTP_M_POST, HTTP_M_PATCH, HTTP_M_CONNECT, HTTP_M_OTHER};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        cr_assert(eq(int, http_method_idempotent(yes[i]), 1), "%s", http_method_name(yes[i]));
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        cr_assert(eq(int, http_method_idempotent(no[i]), 0), "%s", http_method_name(no[i]));
    assert_str(http_method_name(HTTP_M_DELETE), "DELETE");
}

/* ---- request rejections ------------------------------------------------- */

Test(http, content_length_with_transfer_encoding)
{
    reject("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
           "3\r\nabc\r\n0\r\n\r\n",
           400);
    reject("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
           "abc",
           400);
}

Test(http, two_content_lengths)
{
    reject("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400);
    reject("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400);
    reject("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc", 400);
    reject("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400);
    reject("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400);
}

Test(http, whitespace_before_colon)
{
    reject("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400);
    reject("GET / HTTP/1.1\r\nHost: a\r\nX-A\t: b\r\n\r\n", 400);
    reject("GET / HTTP/1.1\r\nHost: a\r\nBad Name: b\r\n\r\n", 400);
    reject("GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400);
}

Test(http, control_characters_in_header_value)
{
    reject("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 400);
    reject("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400);
    reject("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n", 400);
    reject("GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n", 400);
    reject("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\r\n\r\n", 400);
}

Test(http, obs_fold)
{
    reject("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400);
    reject("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", 400);
    /* folding after an empty value */
    reject("GET / HTTP/1.1\r\nHost: a\r\nX:\r\n b\r\n\r\n", 400);
    reject("GET / HTTP/1.1\r\nHost: a\r\nX:  \r\n\t b\r\n\r\n", 400);
    reject("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400);
    reject("GET / HTTP/1.1\r\nHost:\r\n a\r\n\r\n", 400);
    reject("GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n", 400);
}

Test(http, invalid_chunk_size)
{
    reject("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400);
    reject("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", 400);
    reject("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", 400);
}

/* Framing the library's non-strict build lets through: a proxy forwards
 * body bytes unchanged, so anything a backend could frame differently must
 * be refused (request smuggling). */
#define CHUNKED_HEAD "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
Test(http, loose_chunk_framing_is_rejected)
{
    reject(CHUNKED_HEAD "3\r\nabcXY0\r\n\r\n", 400);    /* data not followed by CRLF */
    reject(CHUNKED_HEAD "3\r\nabc\n0\r\n\r\n", 400);    /* bare LF after data */
    reject(CHUNKED_HEAD "3\rXabc\r\n0\r\n\r\n", 400);   /* bare CR in the size line */
    reject(CHUNKED_HEAD "3\nabc\r\n0\r\n\r\n", 400);    /* bare LF ends the size line */
    reject(CHUNKED_HEAD "3 \r\nabc\r\n0\r\n\r\n", 400); /* whitespace not before ';' */
    reject(CHUNKED_HEAD "3;\nabc\r\n0\r\n\r\n", 400);   /* LF inside an extension */
    reject(CHUNKED_HEAD "3;a\x01\r\nabc\r\n0\r\n\r\n", 400);
    reject(CHUNKED_HEAD "0\r\nX\x01: 1\r\n\r\n", 400);  /* bad trailer name */
    reject(CHUNKED_HEAD "0\r\nX: 1\r\r\n\r\n", 400);    /* bare CR in a trailer */
    reject(CHUNKED_HEAD "0\r\n\rX", 400);               /* bad final line */
    reject(CHUNKED_HEAD " 3\r\nabc\r\n0\r\n\r\n", 400); /* whitespace before the size */
}

Test(http, strict_chunk_framing_accepts_valid_forms)
{
    static const char in[] = CHUNKED_HEAD "a\r\n0123456789\r\nB \t; x=1\r\n0123456789A\r\n"
                                          "00\r\nT: v\tw\r\n\r\n";
    struct rec r;
    check(&r, in, &req_opts);
    const struct rec_msg *rm = only_msg(&r);
    cr_assert(eq(sz, rm->body_bytes, sizeof(in) - 1 - (sizeof(CHUNKED_HEAD) - 1)));
    rec_free(&r);
}

Test(http, chunk_size_overflow)
{
    reject("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
           "FFFFFFFFFFFFFFFFFFFF\r\n",
           400);
    reject("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
           "10000000000000000\r\n",
           400);
}

Test(http, unsupported_transfer_coding)
{
    reject("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501);
    reject("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501);
    reject("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 501);
    reject("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunkedx\r\n\r\n", 501);
}

Test(http, two_transfer_encodings)
{
    static const char in[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                             "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    struct rec r;
    check(&r, in, &req_opts);
    /* Chunked twice is not "a single chunked": the unsupported-coding rule. */
    cr_assert(eq(int, r.err_status, 501));
    cr_assert(eq(uint, r.ndone, 0));
    rec_free(&r);
}

Test(http, host_header_rules)
{
    reject("GET / HTTP/1.1\r\n\r\n", 400);
    reject("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400);
    reject("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400);
    reject("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400);
}

/* A request whose head is exactly `total` bytes: one big header. */
static char *big_head(size_t total, size_t *len)
{
    static const char pre[] = "GET / HTTP/1.1\r\nHost: a\r\nX-Big: ";
    char *s = malloc(total + 1);
    cr_assert(ne(ptr, s, NULL));
    size_t np = sizeof(pre) - 1, fill = total - np - 4;
    memcpy(s, pre, np);
    memset(s + np, 'v', fill);
    memcpy(s + np + fill, "\r\n\r\n", 4);
    s[total] = '\0';
    *len = total;
    return s;
}

Test(http, head_size_limit)
{
    size_t len;
    char *s = big_head(HTTP_DEFAULT_MAX_HEAD, &len);
    struct rec r;
    check_big(&r, s, len, &req_opts);
    const struct rec_msg *rm = only_msg(&r);
    cr_assert(eq(sz, rm->head_bytes, 65536));
    rec_free(&r);
    free(s);

    s = big_head(HTTP_DEFAULT_MAX_HEAD + 1, &len);
    expect_error(s, len, &req_opts, 431);
    free(s);

    /* Endless head: the limit cuts it even without an end. */
    s = big_head(HTTP_DEFAULT_MAX_HEAD * 2, &len);
    expect_error(s, len - 4, &req_opts, 431);
    free(s);
}

Test(http, head_size_limit_configurable)
{
    static const char in[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    struct opts o = req_opts;
    o.max_head_bytes = sizeof(in) - 1;
    struct rec r;
    check(&r, in, &o);
    only_msg(&r);
    rec_free(&r);
    o.max_head_bytes = sizeof(in) - 2;
    expect_error(in, sizeof(in) - 1, &o, 431);
    o.kind = HTTP_RESPONSE_KIND;
    o.max_head_bytes = 10;
    expect_error("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 38, &o, 400);
}

Test(http, too_many_headers)
{
    char in[8192];
    size_t n = (size_t)snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 1; i <= HTTP_MAX_HEADERS; i++)
        n += (size_t)snprintf(in + n, sizeof(in) - n, "X-H%d: v\r\n", i);
    n += (size_t)snprintf(in + n, sizeof(in) - n, "\r\n");
    expect_error(in, n, &req_opts, 431);
}

Test(http, too_many_headers_then_bad_byte_is_chunking_independent)
{
    /* One header too many whose name then turns invalid: the outcome must
     * not depend on where the segments end. */
    char in[8192];
    size_t n = (size_t)snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 1; i < HTTP_MAX_HEADERS; i++)
        n += (size_t)snprintf(in + n, sizeof(in) - n, "X-H%d: v\r\n", i);
    n += (size_t)snprintf(in + n, sizeof(in) - n, "abc@: v\r\n\r\n");
    struct rec r;
    check_big(&r, in, n, &req_opts);
    /* The 129th field is refused at its first byte, before its bad one. */
    cr_assert(eq(int, r.err_status, 431));
    rec_free(&r);
}

static char *long_target(size_t target_len, const char *tail, size_t *len)
{
    size_t tl = strlen(tail);
    char *s = malloc(target_len + tl + 64);
    cr_assert(ne(ptr, s, NULL));
    memcpy(s, "GET /", 5);
    memset(s + 5, 'a', target_len - 1);
    memcpy(s + 4 + target_len, tail, tl);
    *len = 4 + target_len + tl;
    s[*len] = '\0';
    return s;
}

Test(http, uri_limit)
{
    size_t len;
    char *s = long_target(HTTP_DEFAULT_MAX_URI, " HTTP/1.1\r\nHost: a\r\n\r\n", &len);
    struct rec r;
    check_big(&r, s, len, &req_opts);
    const struct rec_msg *rm = only_msg(&r);
    cr_assert(eq(sz, strlen(rm->target), 8192));
    rec_free(&r);
    free(s);

    s = long_target(HTTP_DEFAULT_MAX_URI + 1, " HTTP/1.1\r\nHost: a\r\n\r\n", &len);
    expect_error(s, len, &req_opts, 414);
    free(s);
}

Test(http, uri_limit_then_bad_byte_is_chunking_independent)
{
    /* An overlong target with a byte the library rejects after the limit. */
    size_t len;
    char *s = long_target(HTTP_DEFAULT_MAX_URI + 100, "\x01 HTTP/1.1\r\nHost: a\r\n\r\n", &len);
    struct rec r;
    check_big(&r, s, len, &req_opts);
    /* The limit is crossed before the bad byte is reached. */
    cr_assert(eq(int, r.err_status, 414));
    rec_free(&r);
    free(s);
}

Test(http, bad_request_targets)
{
    reject("GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject("GET /a\fb HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject("GET  HTTP/1.1\r\nHost: a\r\n\r\n", 400);
}

Test(http, bad_methods_and_garbage)
{
    /* Methods are any token (RFC 9110 9.1), so FOO, GETX and get parse (see
     * methods_are_tokens); what is not a token is refused. */
    reject("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject("GET@ / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject("G\xc3\x89T / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400);
    reject("\x00\x00\x00\x00", 400);
    reject("GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n", 400);
    reject("GET / HTTX/1.1\r\nHost: a\r\n\r\n", 400);
    reject("GET / XTTP/1.1\r\nHost: a\r\n\r\n", 400);
    /* no version at all (HTTP/0.9 style) */
    reject("GET /\r\nHost: a\r\n\r\n", 400);
    reject("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400);
}

Test(http, bare_cr_line_endings)
{
    reject("GET / HTTP/1.1\rHost: a\r\n\r\n", 400);
    reject("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400);
    /* A CR not followed by LF at the end of the head */
    reject("GET / HTTP/1.1\r\nHost: a\r\n\rX", 400);
    reject("GET / HTTP/1.1\r\nHost: a\r\n\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
}

Test(http, poll_with_len_0)
{
    /* len 0 right after a head: DONE for a message without a body, else
     * NEED_MORE without consuming anything. */
    static const char in[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx";
    struct http_msg m;
    size_t used = 99;
    http_msg_init(&m, HTTP_REQUEST_KIND);
    cr_assert(eq(int, http_msg_feed(&m, in, 0, sizeof(in) - 2, &used), HTTP_EV_HEAD));
    cr_assert(eq(sz, used, sizeof(in) - 2));
    cr_assert(eq(int, http_msg_feed(&m, in, sizeof(in) - 2, 0, &used), HTTP_EV_NEED_MORE));
    cr_assert(eq(sz, used, 0));
    cr_assert(eq(int, http_msg_feed(&m, in, sizeof(in) - 2, 1, &used), HTTP_EV_DONE));
    cr_assert(eq(sz, used, 1));
    /* DONE sticks until reset */
    cr_assert(eq(int, http_msg_feed(&m, in, sizeof(in) - 1, 0, &used), HTTP_EV_DONE));
    cr_assert(eq(int, http_msg_eof(&m), HTTP_EV_DONE));
}

Test(http, eof_inside_request)
{
    reject("GET / HTTP/1.1\r\nHost: a\r\n", 400);
    reject("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab", 400);
    reject("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", 400);
}

/* ---- responses ---------------------------------------------------------- */

Test(http, response_with_content_length)
{
    static const char in[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: s\r\n\r\nhello";
    struct rec r;
    check(&r, in, &res_opts);
    const struct rec_msg *rm = only_msg(&r);
    cr_assert(eq(int, rm->status, 200));
    cr_assert(eq(uint, rm->flags, HTTP_F_LENGTH | HTTP_F_KEEP_ALIVE));
    cr_assert(eq(sz, rm->body_bytes, 5));
    cr_assert(eq(sz, rm->head_bytes, sizeof(in) - 1 - 5));
    assert_str(rm->target, "");
    rec_free(&r);
}

Test(http, response_chunked)
{
    static const char in[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n";
    struct rec r;
    check(&r, in, &res_opts);
    const struct rec_msg *rm = only_msg(&r);
    cr_assert(eq(uint, rm->flags, HTTP_F_CHUNKED | HTTP_F_KEEP_ALIVE));
    cr_assert(eq(sz, rm->body_bytes, 24));
    rec_free(&r);
}

Test(http, response_until_eof)
{
    static const char in[] = "HTTP/1.1 200 OK\r\nServer: s\r\n\r\nsome bytes";
    struct rec r;
    check(&r, in, &res_opts);
    const struct rec_msg *rm = only_msg(&r);
    cr_assert(eq(uint, rm->flags, HTTP_F_BODY_UNTIL_EOF));
    cr_assert(eq(sz, rm->body_bytes, 10));
    rec_free(&r);

    /* Without the end of stream the message never completes. */
    struct opts o = res_opts;
    o.no_eof = 1;
    check(&r, in, &o);
    cr_assert(eq(uint, r.nmsgs, 1));
    cr_assert(eq(uint, r.ndone, 0));
    cr_assert(eq(int, r.err_status, 0));
    rec_free(&r);

    /* HTTP/1.0 with an empty body */
    check(&r, "HTTP/1.0 200 OK\r\n\r\n", &res_opts);
    rm = only_msg(&r);
    cr_assert(eq(uint, rm->flags, HTTP_F_BODY_UNTIL_EOF));
    cr_assert(eq(sz, rm->body_bytes, 0));
    rec_free(&r);
}

Test(http, response_204_304_have_no_body)
{
    static const char in[] = "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"
                             "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n"
                             "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    struct rec r;
    check(&r, in, &res_opts);
    cr_assert(eq(int, r.err_status, 0));
    cr_assert(eq(uint, r.ndone, 3));
    cr_assert(eq(int, r.msgs[0].status, 204));
    cr_assert(eq(uint, r.msgs[0].flags & HTTP_F_NO_BODY, HTTP_F_NO_BODY));
    cr_assert(eq(sz, r.msgs[0].body_bytes, 0));
    cr_assert(eq(int, r.msgs[1].status, 304));
    cr_assert(eq(uint, r.msgs[1].flags & HTTP_F_NO_BODY, HTTP_F_NO_BODY));
    cr_assert(eq(sz, r.msgs[1].body_bytes, 0));
    cr_assert(eq(int, r.msgs[2].status, 200));
    cr_assert(eq(sz, r.msgs[2].body_bytes, 2));
    cr_assert(eq(sz, r.msgs[2].end, sizeof(in) - 1));
    rec_free(&r);
}

Test(http, response_to_head_has_no_body)
{
    static const char in[] = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
    struct opts o = res_opts;
    o.request_was_head = 1;
    struct rec r;
    check(&r, in, &o);
    const struct rec_msg *rm = only_msg(&r);
    cr_assert(eq(uint, rm->flags & HTTP_F_NO_BODY, HTTP_F_NO_BODY));
    cr_assert(eq(u64, rm->content_length, 100));
    cr_assert(eq(sz, rm->body_bytes, 0));
    cr_assert(eq(sz, rm->end, sizeof(in) - 1));
    rec_free(&r);

    /* DONE right after the head, even without an end of stream */
    o.no_eof = 1;
    check(&r,
          "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nHTTP/1.1 200 OK\r\n"
          "Transfer-Encoding: chunked\r\n\r\n",
          &o);
    cr_assert(eq(uint, r.ndone, 2));
    cr_assert(eq(int, r.err_status, 0));
    rec_free(&r);
}

Test(http, continue_then_final_response)
{
    static const char in[] = "HTTP/1.1 100 Continue\r\n\r\n"
                             "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
    struct rec r;
    check(&r, in, &res_opts);
    cr_assert(eq(int, r.err_status, 0));
    cr_assert(eq(uint, r.ndone, 2));
    cr_assert(eq(int, r.msgs[0].status, 100));
    cr_assert(eq(uint, r.msgs[0].flags & HTTP_F_NO_BODY, HTTP_F_NO_BODY));
    cr_assert(eq(sz, r.msgs[0].end, 25));
    cr_assert(eq(int, r.msgs[1].status, 200));
    cr_assert(eq(sz, r.msgs[1].start, 25));
    cr_assert(eq(sz, r.msgs[1].body_bytes, 3));
    rec_free(&r);
}

Test(http, switching_protocols)
{
    static const char head[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                               "Connection: Upgrade\r\n\r\n";
    static const char in[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             "Connection: Upgrade\r\n\r\n\x81\x02hi";
    struct rec r;
    check(&r, in, &res_opts);
    const struct rec_msg *rm = only_msg(&r);
    cr_assert(eq(int, rm->status, 101));
    cr_assert(
        eq(uint, rm->flags & (HTTP_F_UPGRADE | HTTP_F_NO_BODY), HTTP_F_UPGRADE | HTTP_F_NO_BODY));
    cr_assert(eq(sz, r.consumed, sizeof(head) - 1));
    rec_free(&r);
}

Test(http, response_rejections)
{
    reject_res("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", 400);
    reject_res("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
    reject_res("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx", 400);
    reject_res("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400);
    reject_res("HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n", 400);
    reject_res("HTTP/1.1 20 OK\r\n\r\n", 400);
    reject_res("HTTP/1.1 099 Low\r\n\r\n", 400);
    reject_res("HTTX/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 400);
    reject_res("HTTX/1.1 200 OK\r\n\r\n", 400);
    reject_res("HTTP/1.1 200 OK\rContent-Length: 0\r\n\r\n", 400);
    reject_res("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\rX", 400);
}

/* ---- our own parser: methods, targets, versions ------------------------- */

static void expect_method(const char *in, int method, const char *tok, const char *target)
{
    struct rec r;
    check_str(&r, in, &req_opts);
    const struct rec_msg *rm = only_msg(&r);
    cr_assert(eq(int, rm->method, method), "[%s]", in);
    assert_str(rm->method_tok, tok);
    assert_str(rm->target, target);
    rec_free(&r);
}

Test(http, methods_are_tokens)
{
    /* Every RFC 9110 token is a method; unknown ones are HTTP_M_OTHER with
     * their token, case-sensitive ("get" is not GET). */
    expect_method("QUERY /q HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}", HTTP_M_OTHER,
                  "QUERY", "/q");
    expect_method("FOO / HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_M_OTHER, "FOO", "/");
    expect_method("GETX / HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_M_OTHER, "GETX", "/");
    expect_method("get / HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_M_OTHER, "get", "/");
    expect_method("M-SEARCH * HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_M_OTHER, "M-SEARCH", "*");
    expect_method("!#$%&'*+-.^_`|~09azAZ / HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_M_OTHER,
                  "!#$%&'*+-.^_`|~09azAZ", "/");
    static const struct {
        const char *name;
        int method;
    } known[] = {
        {"GET", HTTP_M_GET},         {"HEAD", HTTP_M_HEAD},     {"POST", HTTP_M_POST},
        {"PUT", HTTP_M_PUT},         {"DELETE", HTTP_M_DELETE}, {"CONNECT", HTTP_M_CONNECT},
        {"OPTIONS", HTTP_M_OPTIONS}, {"TRACE", HTTP_M_TRACE},   {"PATCH", HTTP_M_PATCH}};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        char in[128];
        snprintf(in, sizeof(in), "%s /x HTTP/1.1\r\nHost: a\r\n\r\n", known[i].name);
        expect_method(in, known[i].method, known[i].name, "/x");
        assert_str(http_method_name(known[i].method), known[i].name);
    }
    /* A known name is no prefix match either way. */
    expect_method("GE / HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_M_OTHER, "GE", "/");
    expect_method("POSTS / HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_M_OTHER, "POSTS", "/");
    assert_str(http_method_name(HTTP_M_OTHER), "");
    assert_str(http_method_name(99), "");
    assert_str(http_method_name(-1), "");
}

Test(http, connect_is_parsed_not_upgraded)
{
    /* The balancer answers CONNECT with 501 itself: here it is a method
     * with an authority-form target and no body. */
    struct rec r;
    check(&r, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", &req_opts);
    const struct rec_msg *rm = only_msg(&r);
    cr_assert(eq(int, rm->method, HTTP_M_CONNECT));
    assert_str(rm->target, "example.com:443");
    cr_assert(eq(uint, rm->flags, HTTP_F_KEEP_ALIVE | HTTP_F_NO_BODY));
    rec_free(&r);
}

Test(http, request_line_needs_single_spaces)
{
    reject(" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject("GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400);
    reject("GET / \r\nHost: a\r\n\r\n", 400);
    reject("GET /\nHost: a\r\n\r\n", 400);
    reject(": / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
}

Test(http, target_is_visible_ascii_only)
{
    /* UTF-8 (and any byte >= 0x80) or a CTL in the target: 400. */
    reject("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject("GET /\x80 HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject("GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    for (int c = 0; c < 0x20; c++) {
        char in[64];
        int n = snprintf(in, sizeof(in), "GET /a%cb HTTP/1.1\r\nHost: a\r\n\r\n", c ? c : 'X');
        in[6] = (char)c;
        expect_error(in, (size_t)n, &req_opts, 400);
    }
    /* every visible ASCII byte is fine */
    char in[256];
    size_t n = (size_t)snprintf(in, sizeof(in), "GET /");
    for (int c = 0x21; c <= 0x7e; c++)
        in[n++] = (char)c;
    in[n] = '\0';
    n += (size_t)snprintf(in + n, sizeof(in) - n, " HTTP/1.1\r\nHost: a\r\n\r\n");
    struct rec r;
    check_n(&r, in, n, &req_opts, 0);
    const struct rec_msg *rm = only_msg(&r);
    cr_assert(eq(sz, strlen(rm->target), 1 + 0x7e - 0x21 + 1));
    rec_free(&r);
}

Test(http, versions)
{
    reject("GET / HTXP/1.1\r\nHost: a\r\n\r\n", 400);
    reject("GET / http/1.1\r\nHost: a\r\n\r\n", 400);
    reject("GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400);
    reject("GET / HTTP/11.1\r\nHost: a\r\n\r\n", 400);
    reject("GET / HTTP/1\r\nHost: a\r\n\r\n", 400);
    reject("GET / HTTP/1.x\r\nHost: a\r\n\r\n", 400);
    reject("GET / HTTP/1,1\r\nHost: a\r\n\r\n", 400);
    /* well-formed but not ours: 505 */
    reject("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505);
    reject("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505);
    reject("GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505);
    reject("GET / HTTP/3.0\r\n", 505);
    reject_res("HTTP/2.0 200 OK\r\n\r\n", 505);
    reject_res("HTTP/1.1  200 OK\r\n\r\n", 400);
    reject_res("HTTP/1.1 2000 OK\r\n\r\n", 400);
    reject_res("HTTP/1.1 200OK\r\n\r\n", 400);
    reject_res("HTTP/1.1 2x0 OK\r\n\r\n", 400);
    reject_res("HTTP/1.1 200 O\x01K\r\n\r\n", 400);
    reject_res("HTTP/1.1 200 OK\x7f\r\n\r\n", 400);
    reject_res("http/1.1 200 OK\r\n\r\n", 400);
}

Test(http, status_line_forms)
{
    struct rec r;
    /* no reason phrase at all, an empty one, one with HTAB and obs-text */
    check(&r, "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", &res_opts);
    cr_assert(eq(int, only_msg(&r)->status, 200));
    assert_str(only_msg(&r)->reason, "");
    rec_free(&r);
    check(&r, "HTTP/1.1 204 \r\n\r\n", &res_opts);
    assert_str(only_msg(&r)->reason, "");
    rec_free(&r);
    check(&r, "HTTP/1.0 599 Tr\xc3\xa8s\tbien  \r\nContent-Length: 0\r\n\r\n", &res_opts);
    cr_assert(eq(int, only_msg(&r)->status, 599));
    assert_str(only_msg(&r)->reason, "Tr\xc3\xa8s\tbien  ");
    rec_free(&r);
    /* bare LF line ends and empty lines before the status line */
    check(&r, "\r\n\nHTTP/1.1 200 OK\nContent-Length: 2\n\nok", &res_opts);
    cr_assert(eq(sz, only_msg(&r)->payload_len, 2));
    assert_str(only_msg(&r)->payload, "ok");
    rec_free(&r);
}

Test(http, bare_lf_line_ends_in_the_head)
{
    static const char in[] = "\n\r\nPOST /p HTTP/1.1\nHost: a\r\nX-A: 1 \nContent-Length: 3\n\nabc";
    struct rec r;
    check(&r, in, &req_opts);
    const struct rec_msg *rm = only_msg(&r);
    cr_assert(eq(sz, rm->head_bytes, sizeof(in) - 1 - 3));
    assert_header(rm, 0, "Host", "a");
    assert_header(rm, 1, "X-A", "1");
    assert_str(rm->payload, "abc");
    rec_free(&r);
    /* a CR must still be followed by LF */
    reject("GET / HTTP/1.1\r\nHost: a\n\r\r\n", 400);
    reject("\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
}

Test(http, field_values_take_obs_text_but_no_ctl)
{
    struct rec r;
    check(&r, "GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\t\x80\xff ok\r\n\r\n", &req_opts);
    assert_header(only_msg(&r), 1, "X", "caf\xc3\xa9\t\x80\xff ok");
    rec_free(&r);
    for (int c = 0; c < 0x20; c++) {
        if (c == '\t' || c == '\n' || c == '\r')
            continue;
        char in[64];
        int n = snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nHost: a\r\nX: aQb\r\n\r\n");
        in[29] = (char)c;
        expect_error(in, (size_t)n, &req_opts, 400);
    }
    /* a bare CR is a CTL too, and a field name stops at the first non-token */
    reject("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400);
    reject("GET / HTTP/1.1\r\nHost: a\r\nX\xc3\xa9: b\r\n\r\n", 400);
    reject("GET / HTTP/1.1\r\nHost: a\r\nX\r\n\r\n", 400);
    /* whitespace between the start line and the first field */
    reject("GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400);
    reject("GET / HTTP/1.1\r\n\tHost: a\r\n\r\n", 400);
}

Test(http, content_length_grammar)
{
    reject("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", 400);
    reject("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx", 400);
    reject("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 1\r\n\r\nx", 400);
    reject("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400);
    reject("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n", 400);
    struct rec r;
    struct opts o = req_opts;
    o.no_eof = 1;
    check(&r, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\nab", &o);
    cr_assert(eq(u64, r.msgs[0].content_length, UINT64_MAX));
    cr_assert(eq(uint, r.ndone, 0));
    rec_free(&r);
    check(&r, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:  007 \r\n\r\nabcdefg", &req_opts);
    cr_assert(eq(u64, only_msg(&r)->content_length, 7));
    assert_str(only_msg(&r)->payload, "abcdefg");
    rec_free(&r);
}

Test(http, transfer_encoding_in_http10)
{
    reject("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
}

/* ---- chunk extensions (RFC 9112 7.1.1) ---------------------------------- */

/* A chunked request whose first chunk line is `line` ("5<ext>"), with the
 * data "hello" and a last chunk "0<last>". */
static void chunked_case(const char *line, const char *last, int status)
{
    char in[512];
    int n = snprintf(in, sizeof(in), CHUNKED_HEAD "%s\r\nhello\r\n0%s\r\n\r\n", line, last);
    cr_assert(n > 0 && (size_t)n < sizeof(in));
    struct rec r;
    check_n(&r, in, (size_t)n, &req_opts, 0);
    if (status) {
        cr_assert(eq(int, r.err_status, status), "[%s] [%s]: status %d (%s)", line, last,
                  r.err_status, r.err_reason ? r.err_reason : "none");
    } else {
        const struct rec_msg *rm = only_msg(&r);
        assert_str(rm->payload, "hello");
        cr_assert(eq(sz, rm->end, (size_t)n));
    }
    rec_free(&r);
}

Test(http, chunk_extensions_valid)
{
    static const char *const ok[] = {
        "5;a",
        "5;a=b",
        "5;a=b;c;d=e",
        "5 ;a",
        "5\t;a",
        "5; a",
        "5;\ta",
        "5;a =b",
        "5;a= b",
        "5;a \t= \tb",
        "5 ; a = b ; c = d",
        "5;a=\"\"",
        "5;a=\"x y\"",
        "5;a=\"\\\"\"",
        "5;a=\"q\\\"x\\\\y\"",
        "5;a=\"\\x\\\t\\ \"",
        "5;a=\"caf\xc3\xa9\"",
        "5;a=\"\t;=,\"",
        "5;a=\"b\" ;c",
        "5;a=\"b\";c=\"d\"",
        "5;!#$%&'*+-.^_`|~=!#$%&'*+-.^_`|~",
        "005;a",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        chunked_case(ok[i], "", 0);
    /* on the last chunk too */
    chunked_case("5", ";last", 0);
    chunked_case("5", " ; a = \"b\\\"c\"", 0);
}

Test(http, chunk_extensions_invalid)
{
    static const char *const bad[] = {
        "5;",             /* no name */
        "5; ",            /* no name */
        "5;;a",           /* empty name */
        "5;=b",           /* no name */
        "5;a=",           /* no value */
        "5;a= ",          /* no value */
        "5;a ",           /* BWS not followed by '=' or ';' */
        "5;a=b ",         /* trailing BWS */
        "5 ",             /* BWS without ';' */
        "5;a b",          /* two names */
        "5;a=b c",        /* two values */
        "5;a=b=c",        /* '=' in a token */
        "5;a=\"b\"c",     /* token after a quoted string */
        "5;a=\"b",        /* unterminated quoted string */
        "5;a=\"b\\",      /* unterminated quoted-pair */
        "5;a@b",          /* not a token */
        "5;a=b@",         /* not a token */
        "5;a=\"\x01\"",   /* CTL in a quoted string */
        "5;a=\"\x7f\"",   /* DEL in a quoted string */
        "5;a=\"\\\x01\"", /* CTL in a quoted-pair */
        "5;a=b,c",        /* comma */
        "5;a\xc3\xa9",    /* obs-text in a name */
        "5;a=b\xc3\xa9",  /* obs-text in a token */
        "5,a",            /* not ';' */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        chunked_case(bad[i], "", 400);
    /* CR, LF and NUL anywhere in an extension, quoted or not */
    reject(CHUNKED_HEAD "5;a=\"b\r\nc\"\r\nhello\r\n0\r\n\r\n", 400);
    reject(CHUNKED_HEAD "5;a=\"b\nc\"\r\nhello\r\n0\r\n\r\n", 400);
    reject(CHUNKED_HEAD "5;a=\"b\rc\"\r\nhello\r\n0\r\n\r\n", 400);
    reject(CHUNKED_HEAD "5;a=\"b\0c\"\r\nhello\r\n0\r\n\r\n", 400);
    reject(CHUNKED_HEAD "5;a=\"\\\r\"\r\nhello\r\n0\r\n\r\n", 400);
    reject(CHUNKED_HEAD "5;a\0\r\nhello\r\n0\r\n\r\n", 400);
    reject(CHUNKED_HEAD "5;a=b\rc\r\nhello\r\n0\r\n\r\n", 400);
    reject(CHUNKED_HEAD "5;a\n\r\nhello\r\n0\r\n\r\n", 400);
    /* the unterminated quoted string would swallow the next lines */
    reject(CHUNKED_HEAD "5;a=\"b\r\nhello\r\n0\r\n\r\n", 400);
    /* on the last chunk */
    chunked_case("5", ";", 400);
    chunked_case("5", ";a=\"b", 400);
    chunked_case("5", " ", 400);
}

Test(http, chunk_size_line_limit)
{
    /* 4 KiB per size line, extensions included */
    size_t n = 0, cap = 8192;
    char *in = malloc(cap);
    cr_assert(ne(ptr, in, NULL));
    n = (size_t)snprintf(in, cap, CHUNKED_HEAD "1;a=\"");
    size_t fill = 4096 - 6 - 2; /* "1;a=\"" + "\"" + CR = 4096 with the LF outside */
    memset(in + n, 'x', fill);
    n += fill;
    n += (size_t)snprintf(in + n, cap - n, "\"\r\nx\r\n0\r\n\r\n");
    struct rec r;
    check_big(&r, in, n, &req_opts);
    only_msg(&r);
    rec_free(&r);
    /* one byte more */
    n = (size_t)snprintf(in, cap, CHUNKED_HEAD "1;a=\"");
    memset(in + n, 'x', fill + 1);
    n += fill + 1;
    n += (size_t)snprintf(in + n, cap - n, "\"\r\nx\r\n0\r\n\r\n");
    expect_error(in, n, &req_opts, 400);
    free(in);
}

Test(http, chunk_sizes)
{
    struct rec r;
    check(&r, CHUNKED_HEAD "A\r\n0123456789\r\nb\r\nabcdefghijk\r\n0000\r\n\r\n", &req_opts);
    assert_str(only_msg(&r)->payload, "0123456789abcdefghijk");
    rec_free(&r);
    reject(CHUNKED_HEAD "0x5\r\nhello\r\n0\r\n\r\n", 400);
    reject(CHUNKED_HEAD "+5\r\nhello\r\n0\r\n\r\n", 400);
    reject(CHUNKED_HEAD "g\r\n", 400);
    /* 16 hex digits fit in 64 bits, 17 significant ones do not */
    struct opts o = req_opts;
    o.no_eof = 1;
    check(&r, CHUNKED_HEAD "FFFFFFFFFFFFFFFF\r\nab", &o);
    cr_assert(eq(int, r.err_status, 0));
    assert_str(r.msgs[0].target, "/");
    rec_free(&r);
    struct rec z;
    check(&z, CHUNKED_HEAD "00000000000000000000000000001\r\nx\r\n0\r\n\r\n", &req_opts);
    assert_str(only_msg(&z)->payload, "x");
    rec_free(&z);
    reject(CHUNKED_HEAD "1FFFFFFFFFFFFFFFF\r\n", 400);
}

/* ---- trailers ----------------------------------------------------------- */

Test(http, trailers_are_reported)
{
    static const char in[] = CHUNKED_HEAD "5\r\nhello\r\n0\r\nX-Sum: 42\r\nX-Empty:\r\n"
                                          "X-Pad: \t a  b \t\r\nX-Utf: \xc3\xa9\r\n\r\n";
    struct rec r;
    check(&r, in, &req_opts);
    const struct rec_msg *rm = only_msg(&r);
    assert_str(rm->payload, "hello");
    assert_str(rm->trailers, "X-Sum=[42]\nX-Empty=[]\nX-Pad=[a  b]\nX-Utf=[\xc3\xa9]\n");
    cr_assert(eq(uint, rm->nheaders, 2));
    rec_free(&r);
    /* pipelined after trailers */
    check(&r, CHUNKED_HEAD "0\r\nT: 1\r\n\r\nGET /n HTTP/1.1\r\nHost: a\r\n\r\n", &req_opts);
    cr_assert(eq(uint, r.ndone, 2));
    assert_str(r.msgs[0].trailers, "T=[1]\n");
    assert_str(r.msgs[1].target, "/n");
    assert_str(r.msgs[1].trailers, "");
    rec_free(&r);
    /* and in responses */
    check(&r, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nS: 1\r\n\r\n",
          &res_opts);
    assert_str(only_msg(&r)->trailers, "S=[1]\n");
    rec_free(&r);
}

Test(http, trailers_get_the_field_rules)
{
    reject(CHUNKED_HEAD "0\r\nT: a\r\n b\r\n\r\n", 400);   /* obs-fold */
    reject(CHUNKED_HEAD "0\r\nT: a\r\n\tb\r\n\r\n", 400);  /* obs-fold */
    reject(CHUNKED_HEAD "0\r\n T: a\r\n\r\n", 400);        /* leading whitespace */
    reject(CHUNKED_HEAD "0\r\nT: a\0b\r\n\r\n", 400);      /* NUL */
    reject(CHUNKED_HEAD "0\r\nT: a\rb\r\n\r\n", 400);      /* bare CR */
    reject(CHUNKED_HEAD "0\r\nT: a\x7f\r\n\r\n", 400);     /* DEL */
    reject(CHUNKED_HEAD "0\r\nT : a\r\n\r\n", 400);        /* whitespace before colon */
    reject(CHUNKED_HEAD "0\r\n: a\r\n\r\n", 400);          /* empty name */
    reject(CHUNKED_HEAD "0\r\nT\r\n\r\n", 400);            /* no colon */
    reject(CHUNKED_HEAD "0\r\nT\xc3\xa9: a\r\n\r\n", 400); /* name not a token */
    /* the body's framing needs CRLF: a bare LF ends no trailer line */
    reject(CHUNKED_HEAD "0\r\nT: a\n\r\n", 400);
    reject(CHUNKED_HEAD "0\r\nT: a\r\n\n", 400);
    reject(CHUNKED_HEAD "0\r\n\n", 400);
}

Test(http, trailer_section_limit)
{
    /* The trailer section gets the head's limit, counted on its own. */
    static const char in[] = CHUNKED_HEAD "0\r\nT: 123456\r\n\r\n"; /* 13 + 2 trailer bytes */
    struct opts o = req_opts;
    o.max_head_bytes = sizeof(CHUNKED_HEAD) - 1;
    struct rec r;
    check(&r, in, &o);
    cr_assert(eq(int, r.err_status, 0));
    rec_free(&r);
    o.max_head_bytes = 15;
    check(&r, in, &o);
    cr_assert(eq(int, r.err_status, 431)); /* the head itself is over 15 */
    rec_free(&r);

    size_t cap = 2 * HTTP_DEFAULT_MAX_HEAD + 256, n;
    char *big = malloc(cap);
    cr_assert(ne(ptr, big, NULL));
    n = (size_t)snprintf(big, cap, CHUNKED_HEAD "0\r\nT: ");
    size_t fill = HTTP_DEFAULT_MAX_HEAD - 3 - 4; /* "T: " + CRLF CRLF */
    memset(big + n, 'v', fill);
    n += fill;
    memcpy(big + n, "\r\n\r\n", 4);
    n += 4;
    check_big(&r, big, n, &req_opts);
    assert_str(only_msg(&r)->trailers + 3 + fill, "]\n");
    rec_free(&r);
    /* one byte more */
    n = (size_t)snprintf(big, cap, CHUNKED_HEAD "0\r\nT: ");
    memset(big + n, 'v', fill + 1);
    n += fill + 1;
    memcpy(big + n, "\r\n\r\n", 4);
    n += 4;
    expect_error(big, n, &req_opts, 431);
    /* an endless one, in a response: 400 (the caller answers 502) */
    n = (size_t)snprintf(big, cap, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n");
    for (; n + 6 < cap; n += 6)
        memcpy(big + n, "T: a\r\n", 6);
    expect_error(big, n, &res_opts, 400);
    free(big);
}

Test(http, hold_off_follows_the_parser)
{
    static const char in[] = CHUNKED_HEAD "1\r\nx\r\n0\r\nTr: v\r\n\r\n";
    size_t len = sizeof(in) - 1, used;
    struct http_msg m;
    http_msg_init(&m, HTTP_REQUEST_KIND);
    cr_assert(eq(sz, m.hold_off, HTTP_NO_HOLD));
    /* the head starts at offset 0 here; fed from 0 */
    cr_assert(eq(int, http_msg_feed(&m, in, 0, 10, &used), HTTP_EV_NEED_MORE));
    cr_assert(eq(sz, m.hold_off, 0));
    cr_assert(
        eq(int, http_msg_feed(&m, in, 10, sizeof(CHUNKED_HEAD) - 1 - 10, &used), HTTP_EV_HEAD));
    cr_assert(eq(sz, m.hold_off, HTTP_NO_HOLD));
    size_t off = sizeof(CHUNKED_HEAD) - 1;
    size_t tr = off + 9; /* after "1\r\nx\r\n0\r\n" */
    /* without on_trailer nothing is held */
    struct http_msg m2 = m;
    cr_assert(eq(int, http_msg_feed(&m2, in, off, tr + 2 - off, &used), HTTP_EV_NEED_MORE));
    cr_assert(eq(sz, m2.hold_off, HTTP_NO_HOLD));
    /* with it, the unfinished line is */
    struct sink s = {.lo = in, .hi = in + len};
    m.on_trailer = on_trailer_cb;
    m.body_arg = &s;
    cr_assert(eq(int, http_msg_feed(&m, in, off, tr + 2 - off, &used), HTTP_EV_NEED_MORE));
    cr_assert(eq(sz, m.hold_off, tr));
    cr_assert(eq(int, http_msg_feed(&m, in, tr + 2, 5, &used), HTTP_EV_NEED_MORE));
    cr_assert(eq(sz, m.hold_off, HTTP_NO_HOLD));
    assert_str(s.trailers, "Tr=[v]\n");
    cr_assert(eq(int, http_msg_feed(&m, in, tr + 7, 2, &used), HTTP_EV_DONE));
    cr_assert(eq(sz, tr + 7 + used, len));
    free(s.trailers);
}

/* ---- bodies as payload ---------------------------------------------------- */

Test(http, payload_pieces)
{
    struct rec r;
    check(&r, CHUNKED_HEAD "3;x=1\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n", &req_opts);
    assert_str(only_msg(&r)->payload, "abcdefg");
    rec_free(&r);
    check(&r, "HTTP/1.1 200 OK\r\n\r\nuntil the end", &res_opts);
    assert_str(only_msg(&r)->payload, "until the end");
    rec_free(&r);
    /* a response to HEAD has no payload whatever its framing says */
    struct opts o = res_opts;
    o.request_was_head = 1;
    check(&r, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", &o);
    cr_assert(eq(sz, only_msg(&r)->payload_len, 0));
    rec_free(&r);
}

Test(http, response_limits_answer_400)
{
    /* The caller maps any response error to 502: limits give 400 there. */
    char in[8192];
    size_t n = (size_t)snprintf(in, sizeof(in), "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i <= HTTP_MAX_HEADERS; i++)
        n += (size_t)snprintf(in + n, sizeof(in) - n, "X-H%d: v\r\n", i);
    n += (size_t)snprintf(in + n, sizeof(in) - n, "Content-Length: 0\r\n\r\n");
    expect_error(in, n, &res_opts, 400);
}
