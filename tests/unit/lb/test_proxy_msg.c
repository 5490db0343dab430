/* Unit tests for src/lb/proxy_msg.c: the canonical re-framing of chunked
 * bodies (frame_feed + frame_iov), fed in every chunking a read can make. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdlib.h>
#include <string.h>

#include "lb/proxy_int.h"

#define OUT_MAX (1 << 20)

struct out {
    char *p;
    size_t n;
};

static void out_put(struct out *o, const uv_buf_t *iov, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        cr_assert(o->n + iov[i].len <= OUT_MAX);
        memcpy(o->p + o->n, iov[i].base, iov[i].len);
        o->n += iov[i].len;
    }
}

/* Decode a body that must be canonical: lower-case hex sizes, no extension,
 * CRLF everywhere, the last chunk followed by exactly `trailers` (field
 * lines, each with its CRLF) and CRLF. Returns the payload length written
 * to pay, or -1 with the reason printed. */
static long decode_canonical(const char *b, size_t n, char *pay, const char *trailers)
{
    size_t tn = strlen(trailers);
    size_t pos = 0, got = 0;
    for (;;) {
        size_t size = 0, digits = 0;
        while (pos < n && ((b[pos] >= '0' && b[pos] <= '9') || (b[pos] >= 'a' && b[pos] <= 'f'))) {
            size = size * 16 + (size_t)(b[pos] <= '9' ? b[pos] - '0' : b[pos] - 'a' + 10);
            pos++;
            digits++;
        }
        if (!digits || pos + 2 > n || b[pos] != '\r' || b[pos + 1] != '\n') {
            cr_log_error("bad size line at %zu", pos);
            return -1;
        }
        pos += 2;
        if (size == 0) {
            if (pos + tn + 2 != n || memcmp(b + pos, trailers, tn) != 0 ||
                memcmp(b + pos + tn, "\r\n", 2) != 0) {
                cr_log_error("bad trailer section: %.*s", (int)(n - pos), b + pos);
                return -1;
            }
            return (long)got;
        }
        if (pos + size + 2 > n || b[pos + size] != '\r' || b[pos + size + 1] != '\n') {
            cr_log_error("bad chunk data at %zu", pos);
            return -1;
        }
        memcpy(pay + got, b + pos, size);
        got += size;
        pos += size + 2;
    }
}

/* Feed `in` (a chunked body) through a frame, `step` bytes per read (0 =
 * all at once), like the proxy does: the read buffer keeps the unparsed
 * rest, each batch is "written" before the next feed, and the buffer starts
 * over only when all is used and no trailer line is held. Returns the
 * output. */
static struct out reframe(const char *in, size_t n, size_t step)
{
    struct http_msg m;
    struct frame f;
    struct out o = {malloc(OUT_MAX), 0};
    char *rbuf = malloc(n + 1);
    size_t rlen = 0, rpos = 0, fed = 0;
    const char head[] = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    size_t used;
    memset(&f, 0, sizeof f);
    buf_init(&f.trailers, 4096);
    http_msg_init(&m, HTTP_REQUEST_KIND);
    cr_assert(eq(int, http_msg_feed(&m, head, 0, sizeof head - 1, &used), HTTP_EV_HEAD));
    int ev = HTTP_EV_NEED_MORE;
    while (ev == HTTP_EV_NEED_MORE) {
        if (rpos == rlen && m.hold_off == HTTP_NO_HOLD)
            rpos = rlen = 0;
        size_t take = step && n - fed > step ? step : n - fed;
        memcpy(rbuf + rlen, in + fed, take);
        rlen += take;
        fed += take;
        while (rpos < rlen && ev == HTTP_EV_NEED_MORE) {
            ev = frame_feed(&f, &m, rbuf, &rpos, rlen);
            unsigned k;
            uv_buf_t *iov = frame_iov(&f, ev == HTTP_EV_DONE, NULL, &k);
            out_put(&o, iov, k);
        }
        if (fed == n && ev == HTTP_EV_NEED_MORE)
            break;
    }
    cr_assert(eq(int, ev, HTTP_EV_DONE), "the body did not end (step %zu)", step);
    buf_free(&f.trailers);
    free(rbuf);
    return o;
}

static void check_all_chunkings(const char *in, const char *want, const char *trailers)
{
    size_t n = strlen(in);
    char *pay = malloc(OUT_MAX);
    size_t steps[] = {0, 1, 2, 3, 5, 7, 64, 4096};
    for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
        struct out o = reframe(in, n, steps[s]);
        long got = decode_canonical(o.p, o.n, pay, trailers);
        cr_assert(got >= 0, "not canonical with step %zu: %.*s", steps[s], (int)o.n, o.p);
        cr_assert(eq(long, got, (long)strlen(want)), "step %zu", steps[s]);
        cr_assert(memcmp(pay, want, (size_t)got) == 0, "payload differs with step %zu", steps[s]);
        cr_assert(memchr(o.p, ';', o.n) == NULL, "an extension went through (step %zu)", steps[s]);
        free(o.p);
    }
    free(pay);
}

Test(frame, extensions_and_whitespace_are_dropped)
{
    check_all_chunkings("5;a=b\r\nhello\r\n6 ; q=\"x y\"\r\n world\r\n0;end\r\n\r\n", "hello world",
                        "");
}

Test(frame, upper_case_and_padded_sizes_become_canonical)
{
    check_all_chunkings("000A\r\n0123456789\r\n1F\r\nabcdefghijklmnopqrstuvwxyz01234\r\n0\r\n\r\n",
                        "0123456789abcdefghijklmnopqrstuvwxyz01234", "");
}

Test(frame, trailers_are_forwarded_canonically)
{
    /* Split anywhere (a trailer line across reads too): the same fields,
     * trimmed, framing and hop-by-hop names dropped. */
    check_all_chunkings("3\r\nabc\r\n0;x=y\r\nX-T:   1 2 \r\nContent-Length: 3\r\n"
                        "Trailer: X-T\r\nx-sum:\tabc\r\n\r\n",
                        "abc", "X-T: 1 2\r\nx-sum: abc\r\n");
}

Test(frame, empty_body)
{
    check_all_chunkings("0\r\n\r\n", "", "");
}

Test(frame, held_trailer_line)
{
    /* The parser holds an unfinished trailer line from its first byte. */
    struct http_msg m;
    struct frame f;
    size_t used, pos = 0;
    const char head[] = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    const char body[] = "1\r\nq\r\n0\r\nX-A: 1\r\nX-B: 2";
    memset(&f, 0, sizeof f);
    buf_init(&f.trailers, 4096);
    http_msg_init(&m, HTTP_REQUEST_KIND);
    cr_assert(eq(int, http_msg_feed(&m, head, 0, sizeof head - 1, &used), HTTP_EV_HEAD));
    cr_assert(eq(int, frame_feed(&f, &m, body, &pos, sizeof body - 1), HTTP_EV_NEED_MORE));
    cr_assert(eq(sz, pos, sizeof body - 1));
    cr_assert(eq(sz, m.hold_off, (size_t)(strstr(body, "X-B") - body)));
    cr_assert(eq(sz, f.trailers.len, 8), "%s", f.trailers.data); /* "X-A: 1\r\n" */
    buf_free(&f.trailers);
}

Test(frame, many_tiny_chunks_never_overflow_the_slots)
{
    /* 3 * FRAME_SLOTS one-byte chunks in one read: the slice bound keeps
     * every batch within FRAME_SLOTS pieces. */
    static char in[3 * FRAME_SLOTS * 6 + 8], want[3 * FRAME_SLOTS + 1];
    size_t k = 0;
    for (int i = 0; i < 3 * FRAME_SLOTS; i++) {
        char c = (char)('a' + i % 26);
        in[k++] = '1';
        in[k++] = '\r';
        in[k++] = '\n';
        in[k++] = c;
        in[k++] = '\r';
        in[k++] = '\n';
        want[i] = c;
    }
    memcpy(in + k, "0\r\n\r\n", 6);
    check_all_chunkings(in, want, "");
}

Test(frame, contiguous_pieces_of_one_read_become_one_chunk)
{
    static char in[20000];
    size_t k = (size_t)snprintf(in, sizeof in, "%x\r\n", 10000);
    memset(in + k, 'z', 10000);
    memcpy(in + k + 10000, "\r\n0\r\n\r\n", 8);
    struct out o = reframe(in, strlen(in), 0);
    const char want_head[] = "2710\r\nzz";
    cr_assert(memcmp(o.p, want_head, sizeof want_head - 1) == 0, "%.8s", o.p);
    cr_assert(eq(sz, o.n, 6 + 10000 + 2 + 5));
    free(o.p);
}

Test(frame, kept_trailers_follow_the_last_chunk)
{
    struct frame f;
    memset(&f, 0, sizeof f);
    buf_init(&f.trailers, 4096);
    frame_on_trailer(&f, "X-Checksum", 10, "abc", 3);
    frame_on_trailer(&f, "Content-Length", 14, "5", 1); /* framing: dropped */
    frame_on_trailer(&f, "Connection", 10, "close", 5); /* hop-by-hop: dropped */
    unsigned k;
    uv_buf_t *iov = frame_iov(&f, 1, NULL, &k);
    char out[256];
    size_t n = 0;
    for (unsigned i = 0; i < k; i++) {
        memcpy(out + n, iov[i].base, iov[i].len);
        n += iov[i].len;
    }
    const char want[] = "0\r\nX-Checksum: abc\r\n\r\n";
    cr_assert(eq(sz, n, sizeof want - 1), "%.*s", (int)n, out);
    cr_assert(memcmp(out, want, n) == 0, "%.*s", (int)n, out);
    buf_free(&f.trailers);
}
