/* Message heads and bodies on their way through: the rewritten request and
 * response heads (hop-by-hop fields dropped, forwarding fields added), the
 * hash key of a request, and the canonical re-framing of chunked bodies and
 * their trailer fields. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/alloc.h"
#include "lb/proxy_int.h"

static int slice_eq(const char *buf, struct http_slice s, const char *lower, size_t n)
{
    return s.len == n && strncasecmp(buf + s.off, lower, n) == 0;
}

#define SLICE_IS(buf, s, lit) slice_eq((buf), (s), (lit), sizeof(lit) - 1)

/* Is header name `name` listed as a token in any Connection header of m? */
static int listed_in_connection(const struct http_msg *m, const char *buf, const unsigned *conn,
                                unsigned nconn, struct http_slice name)
{
    for (unsigned k = 0; k < nconn; k++) {
        struct http_slice v = m->headers[conn[k]].value;
        const char *p = buf + v.off, *end = p + v.len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
                p++;
            const char *s = p;
            while (p < end && *p != ',')
                p++;
            const char *e = p;
            while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            if ((size_t)(e - s) == name.len && strncasecmp(s, buf + name.off, name.len) == 0)
                return 1;
        }
    }
    return 0;
}

/* Headers a proxy never forwards (RFC 9110 7.6.1). Upgrade goes through only
 * when the exchange is an upgrade. Framing headers are kept: the body is
 * forwarded with its own framing. */
static int hop_by_hop(const char *buf, struct http_slice n, int upgrading)
{
    switch (n.len) {
    case 2:
        return SLICE_IS(buf, n, "te");
    case 7:
        return !upgrading && SLICE_IS(buf, n, "upgrade");
    case 10:
        return SLICE_IS(buf, n, "connection") || SLICE_IS(buf, n, "keep-alive");
    case 16:
        return SLICE_IS(buf, n, "proxy-connection");
    default:
        return 0;
    }
}

/* A Connection token must never strip what frames or routes the message. */
static int protected_header(const char *buf, struct http_slice n)
{
    return SLICE_IS(buf, n, "content-length") || SLICE_IS(buf, n, "transfer-encoding") ||
           SLICE_IS(buf, n, "host");
}

static unsigned connection_headers(const struct http_msg *m, const char *buf, unsigned *idx,
                                   unsigned max)
{
    unsigned n = 0;
    for (unsigned i = 0; i < m->nheaders && n < max; i++)
        if (SLICE_IS(buf, m->headers[i].name, "connection"))
            idx[n++] = i;
    return n;
}

/* Does header h go to the next hop? Not when hop-by-hop (RFC 9110 7.6.1) or
 * named in a Connection header, except what frames or routes the message and
 * the Upgrade header of an upgrade. */
static int forwardable(const struct http_msg *m, const char *b, const unsigned *conn,
                       unsigned nconn, const struct http_header *h, int upgrading)
{
    if (hop_by_hop(b, h->name, upgrading))
        return 0;
    return !nconn || protected_header(b, h->name) ||
           (upgrading && SLICE_IS(b, h->name, "upgrade")) ||
           !listed_in_connection(m, b, conn, nconn, h->name);
}

static int put_header(struct buf *o, const char *buf, const struct http_header *h)
{
    int rc = buf_append(o, buf + h->name.off, h->name.len);
    rc |= buf_append(o, ": ", 2);
    rc |= buf_append(o, buf + h->value.off, h->value.len);
    rc |= buf_append(o, "\r\n", 2);
    return rc;
}

/* ---- request head ------------------------------------------------------ */

int msg_build_request_head(struct txn *t)
{
    struct client *c = t->c;
    const char *b = c->rbuf;
    const struct http_msg *m = &t->req;
    struct buf *o = &t->head;
    int trust = lb_cfg(t->w->lb)->trust_forwarded;
    int upgrading = (m->flags & HTTP_F_UPGRADE) != 0;
    int v10 = m->version_major == 1 && m->version_minor == 0;
    unsigned conn[8];
    unsigned nconn = connection_headers(m, b, conn, 8);
    int rc = 0, have_rid = 0, have_proto = 0;
    size_t mlen;
    const char *method = msg_method_name(m, b, &mlen);

    buf_reset(o);
    rc |= buf_append(o, method, mlen);
    rc |= buf_append(o, " ", 1);
    rc |= buf_append(o, b + m->target.off, m->target.len);
    rc |= buf_puts(o, v10 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n");
    rc |= buf_puts(o, "X-Forwarded-For: ");
    for (unsigned i = 0; i < m->nheaders; i++) {
        const struct http_header *h = &m->headers[i];
        if (SLICE_IS(b, h->name, "x-forwarded-for")) {
            /* Earlier hops stay in front: "client, proxy1, ..., us". */
            rc |= buf_append(o, b + h->value.off, h->value.len);
            rc |= buf_append(o, ", ", 2);
        }
    }
    rc |= buf_append(o, c->ip, c->ip_len);
    rc |= buf_append(o, "\r\n", 2);
    for (unsigned i = 0; i < m->nheaders; i++) {
        const struct http_header *h = &m->headers[i];
        if (!forwardable(m, b, conn, nconn, h, upgrading))
            continue;
        if (h->name.len == 15 && SLICE_IS(b, h->name, "x-forwarded-for"))
            continue;
        if (h->name.len == 17 && SLICE_IS(b, h->name, "x-forwarded-proto")) {
            if (!trust)
                continue;
            have_proto = 1;
        }
        if (h->name.len == 12 && SLICE_IS(b, h->name, "x-request-id")) {
            have_rid = 1;
            size_t n = h->value.len < sizeof t->rid ? h->value.len : sizeof t->rid;
            memcpy(t->rid, b + h->value.off, n);
            t->rid_len = (uint8_t)n;
        }
        if (h->name.len == 11 && SLICE_IS(b, h->name, "traceparent"))
            continue; /* ours replaces it: the same trace, this hop as the parent */
        rc |= put_header(o, b, h);
    }
    if (!have_proto)
        rc |= buf_puts(o, c->tls || c->ghost == GHOST_TLS ? "X-Forwarded-Proto: https\r\n"
                                                          : "X-Forwarded-Proto: http\r\n");
    if (!have_rid) {
        /* 128 random bits as 32 hex digits, without printf on the hot path. */
        static const char hex[] = "0123456789abcdef";
        char id[14 + 32 + 2] = "X-Request-Id: ";
        for (int k = 0; k < 2; k++) {
            uint64_t r = lb_worker_rand(t->w);
            for (int d = 0; d < 16; d++, r >>= 4)
                id[14 + k * 16 + d] = hex[r & 15];
        }
        id[46] = '\r';
        id[47] = '\n';
        rc |= buf_append(o, id, sizeof id);
        memcpy(t->rid, id + 14, 32);
        t->rid_len = 32;
    }
    /* W3C trace context: t->trace was begun when the head arrived */
    char tph[13 + TRACEPARENT_LEN + 2] = "traceparent: ";
    trace_format(&t->trace, tph + 13);
    tph[13 + TRACEPARENT_LEN] = '\r';
    tph[13 + TRACEPARENT_LEN + 1] = '\n';
    rc |= buf_append(o, tph, sizeof tph);
    if (upgrading)
        rc |= buf_puts(o, "Connection: upgrade\r\n");
    else if (v10)
        rc |= buf_puts(o, "Connection: keep-alive\r\n");
    rc |= buf_append(o, "\r\n", 2);
    return rc ? -ENOBUFS : 0;
}

/* The key hashed by ip_hash and consistent_hash. */
uint64_t msg_request_key(struct txn *t)
{
    struct lb *lb = t->w->lb;
    struct client *c = t->c;
    const char *b = c->rbuf;
    const struct http_msg *m = &t->req;
    const struct lb_config *cfg = lb_cfg(lb);
    enum lb_hash_kind kind = cfg->key_kind == 1 ? LB_HASH_IP : (enum lb_hash_kind)cfg->hash_kind;

    if (kind == LB_HASH_PATH) {
        const char *tg = b + m->target.off;
        const char *q = memchr(tg, '?', m->target.len);
        return lb_hash64(tg, q ? (size_t)(q - tg) : m->target.len);
    }
    for (unsigned i = 0; i < m->nheaders; i++) {
        const struct http_header *h = &m->headers[i];
        const char *v = b + h->value.off;
        if (kind == LB_HASH_IP && lb_cfg(lb)->trust_forwarded &&
            SLICE_IS(b, h->name, "x-forwarded-for")) {
            size_t n = 0;
            while (n < h->value.len && v[n] != ',' && v[n] != ' ')
                n++;
            if (n)
                return lb_hash64(v, n);
        } else if (kind == LB_HASH_HEADER && h->name.len == cfg->hash_name_len &&
                   strncasecmp(b + h->name.off, cfg->hash_name, cfg->hash_name_len) == 0) {
            return lb_hash64(v, h->value.len);
        } else if (kind == LB_HASH_COOKIE && SLICE_IS(b, h->name, "cookie")) {
            const char *p = v, *end = v + h->value.len;
            while (p < end) {
                while (p < end && (*p == ' ' || *p == ';'))
                    p++;
                const char *eq = memchr(p, '=', (size_t)(end - p));
                if (!eq)
                    break;
                const char *semi = memchr(eq, ';', (size_t)(end - eq));
                if (!semi)
                    semi = end;
                if ((size_t)(eq - p) == cfg->hash_name_len &&
                    memcmp(p, cfg->hash_name, cfg->hash_name_len) == 0)
                    return lb_hash64(eq + 1, (size_t)(semi - eq - 1));
                p = semi;
            }
        }
    }
    /* No key in this request: fall back to the client address. */
    return lb_hash64(c->ip, c->ip_len);
}

int msg_build_response_head(struct txn *t)
{
    const char *b = t->rbuf;
    const struct http_msg *m = &t->resp;
    struct buf *o = &t->out;
    int upgrading = m->status == 101;
    int v10 = t->req.version_major == 1 && t->req.version_minor == 0;
    unsigned conn[8];
    unsigned nconn = connection_headers(m, b, conn, 8);
    /* The status line, without printf on the hot path (status is 100..999). */
    char line[16] = "HTTP/1.1 ";
    line[9] = (char)('0' + m->status / 100);
    line[10] = (char)('0' + m->status / 10 % 10);
    line[11] = (char)('0' + m->status % 10);
    line[12] = ' ';
    int rc = buf_append(o, line, 13);
    rc |= buf_puts(o, http_status_text(m->status));
    rc |= buf_append(o, "\r\n", 2);
    for (unsigned i = 0; i < m->nheaders; i++) {
        const struct http_header *h = &m->headers[i];
        if (!forwardable(m, b, conn, nconn, h, upgrading))
            continue;
        rc |= put_header(o, b, h);
    }
    if (t->xc && m->status >= 200) {
        rc |= buf_puts(o, "X-Cache: ");
        rc |= buf_puts(o, px_cache_status_name(t->xc));
        rc |= buf_append(o, "\r\n", 2);
    }
    if (upgrading)
        rc |= buf_puts(o, "Connection: upgrade\r\n");
    else if (m->status >= 200 && (t->flags & TF_CLOSE))
        rc |= buf_puts(o, "Connection: close\r\n");
    else if (m->status >= 200 && v10)
        rc |= buf_puts(o, "Connection: keep-alive\r\n");
    rc |= buf_append(o, "\r\n", 2);
    return rc ? -ENOBUFS : 0;
}

int msg_response_overload(const struct txn *t)
{
    const struct http_msg *m = &t->resp;
    if (m->status == 429)
        return 1;
    if (m->status != 503)
        return 0;
    for (unsigned i = 0; i < m->nheaders; i++)
        if (SLICE_IS(t->rbuf, m->headers[i].name, "retry-after"))
            return 1;
    return 0;
}

int msg_has_idempotency_key(const struct txn *t)
{
    const struct http_msg *m = &t->req;
    for (unsigned i = 0; i < m->nheaders; i++)
        if (SLICE_IS(t->c->rbuf, m->headers[i].name, "idempotency-key"))
            return 1;
    return 0;
}

/* The one place that reads the parser's method enum. */
unsigned msg_method_class(const struct http_msg *m)
{
    unsigned c = 0;
    if (m->method == HTTP_M_CONNECT)
        c |= MSG_M_CONNECT;
    if (m->method == HTTP_M_HEAD)
        c |= MSG_M_HEAD;
    if (http_method_idempotent(m->method))
        c |= MSG_M_IDEMPOTENT;
    return c;
}

/* The one place that names a request's method for the next hop: the token
 * as received, so every token method (QUERY, extensions) is forwarded. */
const char *msg_method_name(const struct http_msg *m, const char *buf, size_t *len)
{
    *len = m->method_tok.len;
    return buf + m->method_tok.off;
}

/* ---- chunked bodies ---------------------------------------------------------
 * The parser hands out payload pieces as pointers into the read buffer; the
 * framing that came with them (sizes, extensions, raw trailer lines) is
 * never forwarded. Each piece becomes one chunk of its own size, which is
 * what any reader of RFC 9112 7.1 sees, whatever the sender's framing looked
 * like; trailer fields are copied out as they end (frame_on_trailer) and go
 * out rebuilt on the last chunk. The caller keeps an unfinished trailer line
 * in place (m->hold_off, see px_may_grow). */

static void frame_on_body(void *arg, const char *p, size_t n)
{
    struct frame *f = arg;
    /* Contiguous with the previous piece: no framing byte came between, so it
     * is the same chunk continued (a later feed of the same read). */
    if (f->n && f->piece[f->n - 1] + f->plen[f->n - 1] == p) {
        f->plen[f->n - 1] += (uint32_t)n;
        return;
    }
    if (f->n == FRAME_SLOTS) {
        f->overflow = 1; /* cannot happen with frame_feed's slice bound */
        return;
    }
    f->piece[f->n] = p;
    f->plen[f->n] = (uint32_t)n;
    f->n++;
}

int frame_feed(struct frame *f, struct http_msg *m, const char *buf, size_t *pos, size_t len)
{
    int ev = HTTP_EV_NEED_MORE;
    m->on_body = frame_on_body;
    m->on_trailer = frame_on_trailer;
    m->body_arg = f;
    while (*pos < len && f->n < FRAME_SLOTS) {
        /* Two pieces are at least 3 framing bytes apart (LF, a digit, LF at
         * the very least), so k pieces span >= 4k - 3 bytes: a slice of
         * 4(room - 1) + 1 bytes cannot bring more than `room` new pieces. */
        size_t room = FRAME_SLOTS - f->n;
        size_t max = 4 * (room - 1) + 1;
        size_t take = len - *pos < max ? len - *pos : max;
        size_t used;
        ev = http_msg_feed(m, buf, *pos, take, &used);
        *pos += used;
        if (ev != HTTP_EV_NEED_MORE || f->overflow)
            break;
    }
    /* The frame may go back to its pool before the next feed. (A trailer
     * line left unfinished keeps m->hold_off: it is set again next time.) */
    m->on_body = NULL;
    m->on_trailer = NULL;
    return f->overflow ? HTTP_EV_ERROR : ev;
}

static size_t put_hex(char *s, uint32_t v)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[8];
    size_t n = 0;
    do {
        tmp[n++] = hex[v & 15];
        v >>= 4;
    } while (v);
    for (size_t i = 0; i < n; i++)
        s[i] = tmp[n - 1 - i];
    return n;
}

void frame_on_trailer(void *arg, const char *name, size_t nlen, const char *value, size_t vlen)
{
    static const char *const dropped[] = {
        "content-length", "transfer-encoding", "host", "connection", "keep-alive", "te", "trailer",
        "upgrade",        "proxy-connection",  NULL};
    struct frame *f = arg;
    for (const char *const *d = dropped; *d; d++)
        if (strlen(*d) == nlen && strncasecmp(name, *d, nlen) == 0)
            return;
    size_t before = f->trailers.len;
    int rc = buf_append(&f->trailers, name, nlen);
    rc |= buf_append(&f->trailers, ": ", 2);
    rc |= buf_append(&f->trailers, value, vlen);
    rc |= buf_append(&f->trailers, "\r\n", 2);
    if (rc) /* cannot happen with TRAILERS_MAX (see there): drop the field */
        f->trailers.len = before;
}

uv_buf_t *frame_iov(struct frame *f, int end, const uv_buf_t *first, unsigned *n)
{
    unsigned k = 0;
    if (first)
        f->iov[k++] = *first;
    for (unsigned i = 0; i < f->n; i++) {
        char *s = f->text[i];
        size_t l = 0;
        if (i) {
            s[l++] = '\r';
            s[l++] = '\n';
        }
        l += put_hex(s + l, f->plen[i]);
        s[l++] = '\r';
        s[l++] = '\n';
        f->iov[k++] = uv_buf_init(s, (unsigned)l);
        f->iov[k++] = uv_buf_init((char *)f->piece[i], f->plen[i]);
    }
    size_t l = 0;
    if (f->n) {
        f->tail[l++] = '\r';
        f->tail[l++] = '\n';
    }
    if (end) {
        /* The last chunk, the trailer section, the final CRLF. */
        memcpy(f->tail + l, "0\r\n", 3);
        l += 3;
        if (!f->trailers.len) {
            memcpy(f->tail + l, "\r\n", 2);
            l += 2;
        }
    }
    if (l)
        f->iov[k++] = uv_buf_init(f->tail, (unsigned)l);
    if (end && f->trailers.len) {
        f->iov[k++] = uv_buf_init(f->trailers.data, (unsigned)f->trailers.len);
        f->iov[k++] = uv_buf_init((char *)"\r\n", 2);
    }
    f->n = 0;
    *n = k;
    return f->iov;
}

struct frame *frame_get(struct lb_worker *w)
{
    struct proxy_worker *pw = PW(w);
    struct frame *f;
    if (pw->nframes) {
        f = pw->frames[--pw->nframes];
        buf_reset(&f->trailers);
    } else {
        f = xmalloc(sizeof *f);
        buf_init(&f->trailers, TRAILERS_MAX);
    }
    f->n = 0;
    f->overflow = 0;
    return f;
}

void frame_put(struct lb_worker *w, struct frame *f)
{
    struct proxy_worker *pw = PW(w);
    if (!f)
        return;
    if (f->trailers.cap > 4096)
        buf_free(&f->trailers);
    if (pw->nframes < POOL_MAX) {
        pw->frames[pw->nframes++] = f;
        return;
    }
    buf_free(&f->trailers);
    free(f);
}
