/* The proxy state machine.
 *
 * A client connection carries one request at a time (pipelined requests
 * wait in its read buffer and are answered in order). For each request:
 *
 *   CS_HEAD     read and parse the request head (header timer, idle timer)
 *   CS_CONNECT  a new upstream connection is being opened (client reads off)
 *   CS_FORWARD  the rewritten head went out; the body streams up while the
 *               response streams down
 *   CS_TUNNEL   after a 101: raw bytes both ways
 *   CS_CLOSING  an error answer is being written, then the connection closes
 *
 * Bodies are forwarded raw from the read buffers (chunk framing included:
 * the parser only finds the message end), so only heads are copied.
 * Backpressure: while a write to one side is pending, the bytes it points at
 * stay put, and reading from the other side stops once its buffer is full.
 *
 * libuv rules: a handle is freed only in its close callback; a write's data
 * lives until its write callback. */
#include "lb/proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/log.h"
#include "http/http.h"
#include "net/net.h"

#define RBUF_SIZE      (16 * 1024)
#define RBUF_HEAD_MAX  (HTTP_DEFAULT_MAX_HEAD + 1024)
#define OUT_HEAD_MAX   (HTTP_DEFAULT_MAX_HEAD + 4096)
#define BUF_CACHE_MAX  64
#define UP_IDLE_MAX_MS 30000
#define QUEUE_POLL_MS  5

enum { CS_HEAD, CS_CONNECT, CS_FORWARD, CS_TUNNEL, CS_CLOSING, CS_BACKOFF, CS_QUEUED, CS_LOCAL };

#define CF_READING      0x001u
#define CF_WRITING      0x002u /* a write to the client is pending */
#define CF_REQ_DONE     0x004u /* the whole request went upstream */
#define CF_RESP_DONE    0x008u /* the response is parsed; finish after the write */
#define CF_CLOSE_AFTER  0x010u /* close once this response is out */
#define CF_EOF          0x020u /* the client half-closed */
#define CF_RESP_STARTED 0x040u /* a response byte went to the client */
#define CF_HEAD_TIMER   0x080u /* the header timer runs for this head */
#define CF_STALE_RETRY  0x100u /* already retried after a stale pooled connection */
#define CF_CLOSED       0x200u
#define CF_IN_FLIGHT    0x400u  /* counted in stats.in_flight */
#define CF_HEAD_DONE    0x800u  /* the current request's head was parsed */
#define CF_UP_TIMER     0x1000u /* the upstream (response head) timer runs */

#define UF_CONNECTED 0x01u
#define UF_READING   0x02u
#define UF_WRITING   0x04u /* a write to the upstream is pending */
#define UF_REUSED    0x08u /* taken from the idle pool */
#define UF_GOT_BYTES 0x10u /* a response byte arrived for the current request */
#define UF_NOREUSE   0x20u
#define UF_CLOSING   0x40u
#define UF_IN_BODY   0x80u /* the response head is done: the buffer may be compacted */

struct upstream;

struct client {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wreq; /* writes to the client */
    struct lb_worker *w;
    struct list link;
    struct list qlink; /* in w->queue while CS_QUEUED */
    int state;
    unsigned flags;
    int closes_pending;
    char *rbuf;
    size_t rlen, rpos, rcap;
    struct http_msg *req; /* with rbuf: only while a request is in progress */
    struct backend *b;
    struct upstream *up;
    struct buf head; /* the rewritten request head, kept for a retry */
    struct buf out;  /* the rewritten response head or an error answer */
    int retries;
    unsigned retry_after_s;  /* for a 429 */
    struct backend *exclude; /* the backend a retry avoids (referenced) */
    uint64_t t_head_us, t_sent_us, t_queued_us;
    char ip[INET6_ADDRSTRLEN];
    size_t ip_len;
    char peer[64];
};

struct upstream {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq; /* writes to the upstream */
    struct lb_worker *w;
    struct backend *b;
    struct client *c;
    struct list idle_link; /* in b->per_thread[w->id].idle */
    struct list wlink;     /* in w->idle_ups */
    char *rbuf;
    size_t rlen, rpos, rcap;
    struct http_msg resp;
    unsigned flags;
    uint64_t idle_since_ms;
};

static void client_process(struct client *c);
static void client_close(struct client *c);
static void client_reject(struct client *c, int status, const char *reason);
static void client_response_done(struct client *c);
static void client_next(struct client *c);
static int client_dispatch(struct client *c, const struct backend *exclude);
static void up_process(struct upstream *up);
static void request_end(struct client *c);
static void release_backend(struct client *c, struct backend *b);
static void forward_timer(struct client *c);
static void up_close(struct upstream *up);

/* ---- small helpers ---------------------------------------------------- */

static struct lb *LB(const struct client *c)
{
    return c->w->lb;
}

static void log_client(const struct client *c, int level, const char *action, const char *msg)
{
    struct log_ctx ctx = {c->peer, c->b ? c->b->address : NULL, action};
    log_conn(level, &ctx, "%s", msg);
}

static char *rbuf_get(struct lb_worker *w)
{
    if (w->nbuf_cache)
        return w->buf_cache[--w->nbuf_cache];
    return xmalloc(RBUF_SIZE);
}

static struct http_msg *msg_get(struct lb_worker *w)
{
    struct http_msg *m = w->nmsg_cache ? w->msg_cache[--w->nmsg_cache] : xmalloc(sizeof *m);
    http_msg_init(m, HTTP_REQUEST_KIND);
    return m;
}

static void msg_put(struct lb_worker *w, struct http_msg *m)
{
    if (m && w->nmsg_cache < BUF_CACHE_MAX)
        w->msg_cache[w->nmsg_cache++] = m;
    else
        free(m);
}

static void rbuf_put(struct lb_worker *w, char *p, size_t cap)
{
    if (!p)
        return;
    if (cap == RBUF_SIZE && w->nbuf_cache < BUF_CACHE_MAX)
        w->buf_cache[w->nbuf_cache++] = p;
    else
        free(p);
}

/* Room to read into: a cached buffer on demand, grown only while a head
 * does not fit, so an idle keep-alive connection holds no buffer at all. */
static void alloc_room(struct lb_worker *w, char **rbuf, size_t *rlen, size_t *rpos, size_t *rcap,
                       int in_head, uv_buf_t *out)
{
    if (!*rbuf) {
        *rbuf = rbuf_get(w);
        *rcap = RBUF_SIZE;
        *rlen = *rpos = 0;
    }
    if (*rlen == *rcap && in_head && *rcap < RBUF_HEAD_MAX) {
        char *n = xmalloc(RBUF_HEAD_MAX);
        memcpy(n, *rbuf, *rlen);
        rbuf_put(w, *rbuf, *rcap);
        *rbuf = n;
        *rcap = RBUF_HEAD_MAX;
    }
    out->base = *rbuf + *rlen;
    out->len = *rcap - *rlen;
}

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

static int build_request_head(struct client *c)
{
    const char *b = c->rbuf;
    const struct http_msg *m = c->req;
    struct buf *o = &c->head;
    int trust = lb_cfg(LB(c))->trust_forwarded;
    int upgrading = (m->flags & HTTP_F_UPGRADE) != 0;
    int v10 = m->version_major == 1 && m->version_minor == 0;
    unsigned conn[8];
    unsigned nconn = connection_headers(m, b, conn, 8);
    int rc = 0, have_rid = 0, have_proto = 0;

    buf_reset(o);
    /* The method as sent: every token method is forwarded (QUERY...). */
    rc |= buf_append(o, b + m->method_tok.off, m->method_tok.len);
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
        if (h->name.len == 12 && SLICE_IS(b, h->name, "x-request-id"))
            have_rid = 1;
        rc |= put_header(o, b, h);
    }
    if (!have_proto)
        rc |= buf_puts(o, "X-Forwarded-Proto: http\r\n");
    if (!have_rid) {
        /* 128 random bits as 32 hex digits, without printf on the hot path. */
        static const char hex[] = "0123456789abcdef";
        char id[14 + 32 + 2] = "X-Request-Id: ";
        for (int k = 0; k < 2; k++) {
            uint64_t r = lb_worker_rand(c->w);
            for (int d = 0; d < 16; d++, r >>= 4)
                id[14 + k * 16 + d] = hex[r & 15];
        }
        id[46] = '\r';
        id[47] = '\n';
        rc |= buf_append(o, id, sizeof id);
    }
    if (upgrading)
        rc |= buf_puts(o, "Connection: upgrade\r\n");
    else if (v10)
        rc |= buf_puts(o, "Connection: keep-alive\r\n");
    rc |= buf_append(o, "\r\n", 2);
    return rc ? -ENOBUFS : 0;
}

/* The key hashed by ip_hash and consistent_hash. */
static uint64_t request_key(struct client *c)
{
    struct lb *lb = LB(c);
    const char *b = c->rbuf;
    const struct http_msg *m = c->req;
    const struct lb_config *cfg = lb_cfg(lb);
    enum lb_hash_kind kind = cfg->key_kind == 1 ? LB_HASH_IP : (enum lb_hash_kind)cfg->hash_kind;

    if (kind == LB_HASH_PATH) {
        const char *t = b + m->target.off;
        const char *q = memchr(t, '?', m->target.len);
        return lb_hash64(t, q ? (size_t)(q - t) : m->target.len);
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

/* ---- timers and reading ------------------------------------------------ */

static void client_timer(struct client *c, uint64_t ms);

static void client_read_start(struct client *c);

static void client_read_stop(struct client *c)
{
    if (c->flags & CF_READING) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->flags &= ~CF_READING;
    }
}

static void up_read_stop(struct upstream *up)
{
    if (up->flags & UF_READING) {
        uv_read_stop((uv_stream_t *)&up->tcp);
        up->flags &= ~UF_READING;
    }
}

static void up_read_start(struct upstream *up);

/* ---- upstream connections ---------------------------------------------- */

static void on_up_closed(uv_handle_t *h)
{
    struct upstream *up = h->data;
    rbuf_put(up->w, up->rbuf, up->rcap);
    pool_unref(up->b);
    free(up);
}

static void up_close(struct upstream *up)
{
    if (up->flags & UF_CLOSING)
        return;
    up->flags |= UF_CLOSING;
    list_remove(&up->idle_link);
    list_remove(&up->wlink);
    if (up->c) {
        up->c->up = NULL;
        up->c = NULL;
    }
    uv_close((uv_handle_t *)&up->tcp, on_up_closed);
}

static void up_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    struct upstream *up = h->data;
    alloc_room(up->w, &up->rbuf, &up->rlen, &up->rpos, &up->rcap, !(up->flags & UF_IN_BODY), out);
}

/* Passive health: every failure a backend causes goes through here. lost:
 * the connection failed (refused, reset, closed, connect timeout), which
 * active checks can see again; otherwise the backend answered badly or
 * slowly (5xx, response or body timeout). */
static void backend_failed(struct lb_worker *w, struct backend *b, int lost)
{
    __atomic_fetch_add(&b->failures, 1, __ATOMIC_RELAXED);
    pool_report_failure(&w->lb->pool, b, lost);
}

/* May this request be sent again? Only before any response byte reached the
 * client, only when all of it is still at hand (no body), and only when
 * repeating it is harmless: an idempotent method or an Idempotency-Key. */
static int retry_safe(const struct client *c)
{
    const struct http_msg *m = c->req;
    if ((c->flags & CF_RESP_STARTED) || !(m->flags & HTTP_F_NO_BODY))
        return 0;
    if (http_method_idempotent(m->method))
        return 1;
    for (unsigned i = 0; i < m->nheaders; i++)
        if (SLICE_IS(c->rbuf, m->headers[i].name, "idempotency-key"))
            return 1;
    return 0;
}

/* Retries in progress stay under 20% of the requests in flight (floor 3),
 * so a failing pool is not hit with a retry storm. */
static int retry_budget(struct lb *lb)
{
    uint64_t inflight = 0, retrying = 0;
    for (unsigned i = 0; i < lb->nthreads; i++) {
        inflight += __atomic_load_n(&lb->workers[i].stats.in_flight, __ATOMIC_RELAXED);
        retrying += __atomic_load_n(&lb->workers[i].stats.retrying, __ATOMIC_RELAXED);
    }
    uint64_t cap = inflight / 5;
    return retrying < (cap < 3 ? 3 : cap);
}

static void stat_add(uint64_t *v, int64_t d)
{
    __atomic_store_n(v, *v + (uint64_t)d, __ATOMIC_RELAXED);
}

/* How an attempt failed, for the retry decision. */
enum {
    RETRY_NO,
    RETRY_LOST,    /* the connection failed: refused, reset, closed before answering */
    RETRY_ANSWERED /* the backend answered 502/503/504 */
};

/* The current attempt failed before any response byte went out: retry on
 * another backend after a short jittered backoff when allowed, else answer
 * `status` ourselves. The failed backend stays referenced as c->exclude.
 * RETRY_ANSWERED is capped by the retry budget: a backend answering 5xx may
 * be overloaded, and a retry storm would finish it off. RETRY_LOST is not: a
 * peer that refused or dropped the connection is gone, and retrying (at most
 * --retries times per request) is what keeps its death invisible. */
static void client_retry_or_fail(struct client *c, int kind, int status, const char *reason)
{
    struct lb_worker *w = c->w;
    struct lb *lb = w->lb;
    if (c->up)
        up_close(c->up); /* detaches both sides */
    if (kind != RETRY_NO && c->retries > 0 && c->b && (kind == RETRY_LOST || retry_budget(lb))) {
        int attempt = (int)lb_cfg(lb)->retries - c->retries;
        c->retries--;
        if (c->exclude)
            pool_unref(c->exclude);
        c->exclude = c->b;
        pool_ref(c->exclude);
        release_backend(c, c->b);
        c->b = NULL;
        /* 2.5..5 ms, doubling per attempt: long enough to spread a burst of
         * retries, short against any client's patience. */
        uint64_t base_us = 5000ull << (attempt < 6 ? attempt : 6);
        uint64_t delay_us = base_us / 2 + lb_worker_rand(w) % (base_us / 2 + 1);
        c->state = CS_BACKOFF;
        stat_add(&w->stats.retrying, 1);
        stat_add(&w->stats.retries, 1);
        client_read_stop(c);
        client_timer(c, (delay_us + 999) / 1000);
        return;
    }
    client_reject(c, status, reason);
}

/* The backend failed this request before or while answering. */
static void up_failed(struct upstream *up, const char *reason)
{
    struct client *c = up->c;
    backend_failed(c->w, up->b, 1);
    if (c->flags & CF_RESP_STARTED) {
        log_client(c, LOG_WARN, "reading the response", reason);
        stat_add(&c->w->stats.responses[0], 1);
        client_close(c);
        return;
    }
    int reused = (up->flags & UF_REUSED) && !(up->flags & UF_GOT_BYTES);
    up_close(up);
    /* A pooled connection the backend had closed: replay a request that is
     * whole in c->head and safe to repeat, once, without using a retry. */
    const struct http_msg *m = c->req;
    if (reused && !(c->flags & CF_STALE_RETRY) && (m->flags & HTTP_F_NO_BODY) &&
        http_method_idempotent(m->method)) {
        c->flags |= CF_STALE_RETRY;
        struct backend *old = c->b;
        c->b = NULL;
        client_dispatch(c, NULL);
        release_backend(c, old);
        return;
    }
    log_client(c, LOG_WARN, "waiting for the response", reason);
    client_retry_or_fail(c, retry_safe(c) ? RETRY_LOST : RETRY_NO, 502,
                         "bad gateway: the backend failed before answering");
}

static void on_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct upstream *up = s->data;
    if (nread > 0) {
        up->rlen += (size_t)nread;
        if (!up->c) {
            /* Bytes on an idle connection: the backend broke protocol. */
            up_close(up);
            return;
        }
        up->flags |= UF_GOT_BYTES;
        up_process(up);
        return;
    }
    if (nread == 0)
        return;
    if (nread == UV_ENOBUFS) {
        up_read_stop(up);
        return;
    }
    struct client *c = up->c;
    if (!c) {
        up_close(up); /* the backend closed an idle connection */
        return;
    }
    up_read_stop(up);
    if (c->state == CS_TUNNEL) {
        client_close(c);
        return;
    }
    if ((up->flags & UF_IN_BODY) && (up->resp.flags & HTTP_F_BODY_UNTIL_EOF)) {
        if (http_msg_eof(&up->resp) == HTTP_EV_DONE) {
            up->flags |= UF_NOREUSE;
            if (c->flags & CF_WRITING)
                c->flags |= CF_RESP_DONE;
            else
                client_response_done(c);
            return;
        }
    }
    up_failed(up, nread == UV_EOF ? "the backend closed the connection" : uv_strerror((int)nread));
}

static void up_read_start(struct upstream *up)
{
    if (!(up->flags & UF_READING) && !(up->flags & UF_CLOSING)) {
        uv_read_start((uv_stream_t *)&up->tcp, up_alloc, on_up_read);
        up->flags |= UF_READING;
    }
}

static void on_up_written(uv_write_t *req, int status)
{
    struct upstream *up = req->handle->data;
    up->flags &= ~UF_WRITING;
    if (up->flags & UF_CLOSING)
        return;
    struct client *c = up->c;
    if (!c)
        return;
    if (status < 0) {
        up_failed(up, uv_strerror(status));
        return;
    }
    client_read_start(c);
    client_process(c);
}

/* Send the rewritten head and whatever body bytes are already buffered. */
static void up_send_request(struct client *c)
{
    struct upstream *up = c->up;
    size_t used = 0;
    c->state = CS_FORWARD;
    http_msg_reset(&up->resp);
    up->resp.request_was_head = c->req->method == HTTP_M_HEAD;
    up->flags &= ~(UF_GOT_BYTES | UF_IN_BODY);
    up->rpos = up->rlen = 0;
    if (!(c->flags & CF_REQ_DONE)) {
        int ev = http_msg_feed(c->req, c->rbuf, c->rpos, c->rlen - c->rpos, &used);
        if (ev == HTTP_EV_ERROR) {
            client_reject(c, c->req->err_status, c->req->err_reason);
            return;
        }
        if (ev == HTTP_EV_DONE)
            c->flags |= CF_REQ_DONE;
    }
    uv_buf_t bufs[2] = {uv_buf_init(c->head.data, (unsigned)c->head.len),
                        uv_buf_init(c->rbuf + c->rpos, (unsigned)used)};
    c->rpos += used;
    c->t_sent_us = lb_now_us();
    c->flags &= ~CF_UP_TIMER;
    forward_timer(c);
    int rc = net_write((uv_stream_t *)&up->tcp, &up->wreq, bufs, used ? 2 : 1, on_up_written);
    if (rc < 0) {
        up_failed(up, uv_strerror(rc));
        return;
    }
    if (rc == 1)
        up->flags |= UF_WRITING;
    up_read_start(up);
    client_read_start(c);
    client_process(c);
}

static void on_up_connect(uv_connect_t *req, int status)
{
    struct upstream *up = req->handle->data;
    if (up->flags & UF_CLOSING)
        return;
    struct client *c = up->c;
    struct backend_thread *bt = &up->b->per_thread[up->w->id];
    if (status < 0) {
        __atomic_fetch_add(&bt->connect_fails, 1, __ATOMIC_RELAXED);
        backend_failed(c->w, up->b, 1);
        log_client(c, LOG_WARN, "connecting to the backend", uv_strerror(status));
        /* Nothing was sent: any request may go to another backend. */
        client_retry_or_fail(c, RETRY_LOST, 502, "bad gateway: cannot connect to the backend");
        return;
    }
    up->flags |= UF_CONNECTED;
    uv_tcp_nodelay(&up->tcp, 1);
    up_send_request(c);
}

/* Return a finished upstream connection to this thread's idle pool. */
static void up_to_idle(struct upstream *up)
{
    struct lb_worker *w = up->w;
    up->c = NULL;
    up->flags = (up->flags & (UF_CONNECTED | UF_READING)) | UF_REUSED;
    up->rpos = up->rlen = 0;
    rbuf_put(w, up->rbuf, up->rcap);
    up->rbuf = NULL;
    up->idle_since_ms = uv_now(&w->loop);
    list_insert_head(&up->b->per_thread[w->id].idle, &up->idle_link);
    list_insert_head(&w->idle_ups, &up->wlink);
    up_read_start(up); /* to notice the backend closing it */
}

/* ---- response ---------------------------------------------------------- */

static void on_client_written(uv_write_t *req, int status);

/* Write bytes to the client; 0 done, 1 pending, <0 error (client closed). */
static int client_write(struct client *c, uv_buf_t *bufs, unsigned n)
{
    int rc = net_write((uv_stream_t *)&c->tcp, &c->wreq, bufs, n, on_client_written);
    if (rc < 0) {
        client_close(c);
        return rc;
    }
    if (rc == 1)
        c->flags |= CF_WRITING;
    return rc;
}

static int build_response_head(struct client *c, struct upstream *up)
{
    const char *b = up->rbuf;
    const struct http_msg *m = &up->resp;
    struct buf *o = &c->out;
    int upgrading = m->status == 101;
    int v10 = c->req->version_major == 1 && c->req->version_minor == 0;
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
    if (upgrading)
        rc |= buf_puts(o, "Connection: upgrade\r\n");
    else if (m->status >= 200 && (c->flags & CF_CLOSE_AFTER))
        rc |= buf_puts(o, "Connection: close\r\n");
    else if (m->status >= 200 && v10)
        rc |= buf_puts(o, "Connection: keep-alive\r\n");
    rc |= buf_append(o, "\r\n", 2);
    return rc ? -ENOBUFS : 0;
}

/* A response head arrived. 0 to go on, -1 when the client was answered
 * otherwise (502) or closed. */
static int on_response_head(struct client *c, struct upstream *up)
{
    struct lb_worker *w = c->w;
    const struct http_msg *m = &up->resp;
    int st = m->status;
    buf_reset(&c->out);
    if (st >= 100 && st < 200 && st != 101) {
        /* Interim answers go to HTTP/1.1 clients only (RFC 9110 15.2). */
        if (c->req->version_major == 1 && c->req->version_minor == 0)
            return 0;
        c->flags |= CF_RESP_STARTED;
        return build_response_head(c, up) < 0 ? -1 : 0;
    }
    if (st == 101 && !(c->req->flags & HTTP_F_UPGRADE)) {
        up->flags |= UF_NOREUSE;
        up_failed(up, "101 to a request that asked for no upgrade");
        return -1;
    }
    uint64_t now = lb_now_us();
    hist_record(&c->b->per_thread[w->id].ttfb, now - c->t_sent_us);
    if (st >= 500) {
        backend_failed(w, c->b, 0);
        /* A 502/503/504 for a request that is safe to repeat goes to
         * another backend instead of to the client. */
        if (st >= 502 && st <= 504 && retry_safe(c) && c->retries > 0 && retry_budget(w->lb)) {
            up->flags |= UF_NOREUSE;
            client_retry_or_fail(c, RETRY_ANSWERED, 502, "bad gateway");
            return -1;
        }
    } else {
        pool_report_success(c->b);
    }
    stat_add(&w->stats.responses[st / 100 < 6 ? st / 100 : 5], 1);
    if (!(c->req->flags & HTTP_F_KEEP_ALIVE) || !(c->flags & CF_REQ_DONE) ||
        (m->flags & HTTP_F_BODY_UNTIL_EOF) || w->stopping)
        c->flags |= CF_CLOSE_AFTER;
    c->flags |= CF_RESP_STARTED;
    if (build_response_head(c, up) < 0) {
        up->flags |= UF_NOREUSE;
        c->flags &= ~CF_RESP_STARTED;
        up_failed(up, "response head too large");
        return -1;
    }
    forward_timer(c);
    return 0;
}

/* Parse and forward what the upstream sent, until the buffer is drained or
 * a write to the client is pending. */
static void up_process(struct upstream *up)
{
    struct client *c = up->c;
    while (c && !(c->flags & CF_CLOSED)) {
        if (c->flags & CF_WRITING) {
            if (up->rlen == up->rcap)
                up_read_stop(up);
            return;
        }
        if (up->rpos == up->rlen) {
            if (up->flags & UF_IN_BODY || c->state == CS_TUNNEL)
                up->rpos = up->rlen = 0;
            up_read_start(up);
            return;
        }
        if (c->state == CS_TUNNEL) {
            uv_buf_t bufs[1] = {uv_buf_init(up->rbuf + up->rpos, (unsigned)(up->rlen - up->rpos))};
            up->rpos = up->rlen;
            if (client_write(c, bufs, 1) < 0)
                return;
            continue;
        }
        size_t used, start = up->rpos;
        int ev = http_msg_feed(&up->resp, up->rbuf, up->rpos, up->rlen - up->rpos, &used);
        up->rpos += used;
        if (ev == HTTP_EV_ERROR) {
            up->flags |= UF_NOREUSE;
            up_failed(up, up->resp.err_reason ? up->resp.err_reason : "invalid response");
            return;
        }
        uv_buf_t bufs[2];
        unsigned n = 0;
        if (ev == HTTP_EV_HEAD) {
            if (on_response_head(c, up) < 0)
                return;
            up->flags |= UF_IN_BODY;
            if (c->out.len)
                bufs[n++] = uv_buf_init(c->out.data, (unsigned)c->out.len);
            /* Take the body bytes that came with the head in the same write. */
            start = up->rpos;
            ev = http_msg_feed(&up->resp, up->rbuf, up->rpos, up->rlen - up->rpos, &used);
            up->rpos += used;
            if (ev == HTTP_EV_ERROR) {
                stat_add(&c->w->stats.responses[0], 1);
                client_close(c);
                return;
            }
        }
        if (up->rpos > start)
            bufs[n++] = uv_buf_init(up->rbuf + start, (unsigned)(up->rpos - start));
        int interim = up->resp.status < 200 && up->resp.status != 101;
        if (n && client_write(c, bufs, n) < 0)
            return;
        if (n)
            forward_timer(c);
        if (ev != HTTP_EV_DONE)
            continue;
        if (interim) {
            /* 1xx done: the final response follows on the same connection. */
            int was_head = up->resp.request_was_head;
            http_msg_reset(&up->resp);
            up->resp.request_was_head = was_head;
            up->flags &= ~UF_IN_BODY;
            if (c->flags & CF_WRITING)
                return;
            memmove(up->rbuf, up->rbuf + up->rpos, up->rlen - up->rpos);
            up->rlen -= up->rpos;
            up->rpos = 0;
            continue;
        }
        if (up->resp.status == 101) {
            c->state = CS_TUNNEL;
            uv_timer_stop(&c->timer);
            client_read_start(c);
            client_process(c);
            continue;
        }
        if (c->flags & CF_WRITING)
            c->flags |= CF_RESP_DONE;
        else
            client_response_done(c);
        return;
    }
}

/* The response is complete and written: account, recycle, next request. */
static void client_response_done(struct client *c)
{
    struct lb_worker *w = c->w;
    struct upstream *up = c->up;
    struct backend *b = c->b;
    c->flags &= ~CF_RESP_DONE;
    request_end(c);
    hist_record(&b->per_thread[w->id].total, lb_now_us() - c->t_head_us);
    if (up) {
        int reuse = (up->resp.flags & HTTP_F_KEEP_ALIVE) && (c->flags & CF_REQ_DONE) &&
                    !(up->flags & UF_NOREUSE) && up->rpos == up->rlen && !w->stopping &&
                    !(up->flags & UF_WRITING) && backend_state(b) != BACKEND_DRAINING;
        up->c = NULL;
        c->up = NULL;
        if (reuse)
            up_to_idle(up);
        else
            up_close(up);
    }
    c->b = NULL;
    release_backend(c, b);
    client_next(c);
}

/* The exchange is over: close, or get ready for the next request (which
 * may already be in the buffer: pipelining). */
static void client_next(struct client *c)
{
    struct lb_worker *w = c->w;
    if (c->flags & CF_CLOSE_AFTER) {
        client_close(c);
        return;
    }
    c->state = CS_HEAD;
    c->flags &= ~(CF_REQ_DONE | CF_RESP_STARTED | CF_HEAD_TIMER | CF_STALE_RETRY | CF_HEAD_DONE |
                  CF_UP_TIMER);
    http_msg_reset(c->req);
    if (c->rpos < c->rlen) {
        /* A pipelined request is waiting: its head starts at offset 0. */
        memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos;
        c->rpos = 0;
    } else if (c->rbuf) {
        rbuf_put(w, c->rbuf, c->rcap);
        c->rbuf = NULL;
        msg_put(w, c->req); /* an idle connection keeps none of these */
        c->req = NULL;
        buf_free(&c->head);
        buf_free(&c->out);
        c->rlen = c->rpos = c->rcap = 0;
    }
    client_timer(c, (uint64_t)lb_cfg(w->lb)->timeout_idle_ms);
    client_read_start(c);
    client_process(c);
}

/* ---- client connections ------------------------------------------------- */

static void on_client_closed(uv_handle_t *h)
{
    struct client *c = h->data;
    if (--c->closes_pending)
        return;
    rbuf_put(c->w, c->rbuf, c->rcap);
    msg_put(c->w, c->req);
    buf_free(&c->head);
    buf_free(&c->out);
    free(c);
}

static void client_close(struct client *c)
{
    if (c->flags & CF_CLOSED)
        return;
    request_end(c);
    c->flags |= CF_CLOSED;
    if (c->up)
        up_close(c->up); /* detaches both sides */
    if (c->b) {
        release_backend(c, c->b);
        c->b = NULL;
    }
    list_remove(&c->link);
    stat_add(&c->w->stats.open, -1);
    c->closes_pending = 2;
    uv_close((uv_handle_t *)&c->timer, on_client_closed);
    uv_close((uv_handle_t *)&c->tcp, on_client_closed);
}

static void on_client_written(uv_write_t *req, int status)
{
    struct client *c = req->handle->data;
    c->flags &= ~CF_WRITING;
    if (c->flags & CF_CLOSED)
        return;
    if (status < 0 || c->state == CS_CLOSING) {
        client_close(c);
        return;
    }
    if (c->state == CS_LOCAL) {
        client_next(c);
        return;
    }
    if (c->flags & CF_RESP_DONE) {
        client_response_done(c);
        return;
    }
    if (c->up) {
        up_read_start(c->up);
        up_process(c->up);
    }
}

/* Answer with an error of our own. The connection closes after it, except
 * for a 429 or 5xx to a whole, well-formed request on a keep-alive
 * connection, which may carry the next request (as HAProxy and nginx do). */
static void client_reject(struct client *c, int status, const char *reason)
{
    struct lb_worker *w = c->w;
    int keep = (status == 429 || status >= 500) && (c->flags & CF_HEAD_DONE) && c->req &&
               (c->req->flags & HTTP_F_KEEP_ALIVE) &&
               ((c->flags & CF_REQ_DONE) || (c->req->flags & HTTP_F_NO_BODY)) &&
               !(c->flags & (CF_CLOSE_AFTER | CF_EOF | CF_WRITING)) && !w->stopping &&
               c->state != CS_TUNNEL;
    if (c->up)
        up_close(c->up); /* detaches both sides */
    if (c->b) {
        release_backend(c, c->b);
        c->b = NULL;
    }
    client_read_stop(c);
    uv_timer_stop(&c->timer);
    request_end(c);
    c->state = keep ? CS_LOCAL : CS_CLOSING;
    stat_add(&w->stats.lb_errors, 1);
    stat_add(&w->stats.responses[status / 100 < 6 ? status / 100 : 5], 1);
    if (status < 500) {
        struct log_ctx ctx = {c->peer, NULL, "reading the request"};
        log_conn(LOG_DEBUG, &ctx, "%d %s", status, reason);
    }
    if (c->flags & CF_WRITING)
        return; /* closes when the pending write ends */
    buf_reset(&c->out);
    char retry_after[40] = "";
    if (status == 503 || status == 429)
        snprintf(retry_after, sizeof retry_after, "Retry-After: %u\r\n",
                 status == 429 && c->retry_after_s ? c->retry_after_s : 1);
    int body_len = (int)strlen(reason) + 12; /* {"error":""} */
    buf_printf(&c->out,
               "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
               "%s%s\r\n{\"error\":\"%s\"}",
               status, http_status_text(status), body_len, retry_after,
               keep ? "" : "Connection: close\r\n", reason);
    uv_buf_t bufs[1] = {uv_buf_init(c->out.data, (unsigned)c->out.len)};
    if (client_write(c, bufs, 1) == 0) {
        if (keep)
            client_next(c);
        else
            client_close(c);
    }
}

static struct backend *pick_for(struct client *c, const struct backend *exclude, int *full)
{
    struct lb *lb = c->w->lb;
    struct lb_pick_ctx ctx = {0, lb_worker_rand(c->w)};
    if (lb_cfg(lb)->key_kind)
        ctx.key = request_key(c);
    return pool_pick(&lb->pool, &ctx, exclude, full);
}

static void client_attach(struct client *c, struct backend *b);

static uint64_t queued_total(const struct lb *lb)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < lb->nthreads; i++)
        n += __atomic_load_n(&lb->workers[i].stats.queued, __ATOMIC_RELAXED);
    return n;
}

/* Every eligible backend is at --backend-max-conns: wait in this worker's
 * FIFO for a slot, up to --queue-timeout. */
static int client_enqueue(struct client *c)
{
    struct lb_worker *w = c->w;
    struct lb *lb = w->lb;
    if (queued_total(lb) >= (uint64_t)lb_cfg(lb)->queue_max) {
        client_reject(c, 503, "all backends are busy and the queue is full");
        return -1;
    }
    c->state = CS_QUEUED;
    c->t_queued_us = lb_now_us();
    if (list_empty(&w->queue))
        __atomic_store_n(&w->queue_head_us, c->t_queued_us, __ATOMIC_RELAXED);
    list_insert_tail(&w->queue, &c->qlink);
    stat_add(&w->stats.queued, 1);
    client_read_stop(c);
    client_timer(c, (uint64_t)lb_cfg(lb)->queue_timeout_ms);
    if (!uv_is_active((uv_handle_t *)&w->queue_timer))
        uv_timer_start(&w->queue_timer, proxy_queue_tick, QUEUE_POLL_MS, QUEUE_POLL_MS);
    return 0;
}

static void client_dequeue(struct client *c)
{
    struct lb_worker *w = c->w;
    list_remove(&c->qlink);
    __atomic_store_n(&w->queue_head_us,
                     list_empty(&w->queue)
                         ? UINT64_MAX
                         : list_entry(w->queue.next, struct client, qlink)->t_queued_us,
                     __ATOMIC_RELAXED);
    stat_add(&c->w->stats.queued, -1);
    hist_record(&c->w->queue_wait, lb_now_us() - c->t_queued_us);
    c->state = CS_CONNECT;
}

/* Is a request older than t_us waiting on another worker? */
static int older_elsewhere(const struct lb_worker *w, uint64_t t_us)
{
    const struct lb *lb = w->lb;
    for (unsigned i = 0; i < lb->nthreads; i++)
        if (&lb->workers[i] != w &&
            __atomic_load_n(&lb->workers[i].queue_head_us, __ATOMIC_RELAXED) < t_us)
            return 1;
    return 0;
}

/* Hand freed slots to queued requests, oldest first across all workers: a
 * worker leaves a slot to an older request waiting elsewhere, which takes it
 * at its next tick. Runs when a request ends on this worker and, while the
 * queue is not empty, on a short timer (slots freed by other workers). */
static void queue_kick(struct lb_worker *w)
{
    while (!list_empty(&w->queue)) {
        struct client *c = list_entry(w->queue.next, struct client, qlink);
        if (older_elsewhere(w, c->t_queued_us))
            return;
        int full;
        struct backend *b = pick_for(c, NULL, &full);
        if (!b && full)
            return;
        client_dequeue(c);
        if (!b)
            client_reject(c, 503, "no backend available");
        else
            client_attach(c, b);
    }
    uv_timer_stop(&w->queue_timer);
}

static void release_backend(struct client *c, struct backend *b)
{
    pool_release(&c->w->lb->pool, b);
    if (!list_empty(&c->w->queue))
        queue_kick(c->w);
}

void proxy_queue_tick(uv_timer_t *t)
{
    queue_kick(t->data);
}

/* Choose a backend and an upstream connection for the parsed request.
 * 0, or -1 when the client was answered (503) or closed. */
static int client_dispatch(struct client *c, const struct backend *exclude)
{
    int full;
    /* While others wait, a newcomer queues behind them (FIFO). */
    if (!exclude && queued_total(c->w->lb))
        return client_enqueue(c) < 0 ? -1 : (queue_kick(c->w), 0);
    struct backend *b = pick_for(c, exclude, &full);
    if (!b) {
        if (full)
            return client_enqueue(c);
        client_reject(c, 503, "no backend available");
        return -1;
    }
    client_attach(c, b);
    return c->flags & CF_CLOSED ? -1 : 0;
}

/* Send the request to b on an idle pooled connection, or a new one. */
static void client_attach(struct client *c, struct backend *b)
{
    struct lb_worker *w = c->w;
    struct lb *lb = w->lb;
    c->b = b;
    struct backend_thread *bt = &b->per_thread[w->id];
    if (!list_empty(&bt->idle)) {
        struct upstream *up = list_entry(bt->idle.next, struct upstream, idle_link);
        list_remove(&up->idle_link);
        list_remove(&up->wlink);
        up->c = c;
        c->up = up;
        up_send_request(c);
        return;
    }
    struct upstream *up = xcalloc(1, sizeof *up);
    up->w = w;
    up->b = b;
    pool_ref(b);
    list_init(&up->idle_link);
    list_init(&up->wlink);
    http_msg_init(&up->resp, HTTP_RESPONSE_KIND);
    uv_tcp_init(&w->loop, &up->tcp);
    up->tcp.data = up;
    up->c = c;
    c->up = up;
    __atomic_fetch_add(&bt->connects, 1, __ATOMIC_RELAXED);
    c->state = CS_CONNECT;
    client_read_stop(c);
    client_timer(c, (uint64_t)lb_cfg(lb)->timeout_connect_ms);
    int rc = uv_tcp_connect(&up->creq, &up->tcp, (const struct sockaddr *)&b->addr, on_up_connect);
    if (rc < 0) {
        /* Reported like a refused connection, from the loop, not from here. */
        up->flags |= UF_CLOSING;
        c->up = NULL;
        up->c = NULL;
        uv_close((uv_handle_t *)&up->tcp, on_up_closed);
        /* Loopback refuses at once: the same path as a refused connect. */
        __atomic_fetch_add(&bt->connect_fails, 1, __ATOMIC_RELAXED);
        backend_failed(w, b, 1);
        client_retry_or_fail(c, RETRY_LOST, 502, "bad gateway: cannot connect to the backend");
    }
}

/* The request in progress is over (answered, rejected or abandoned). */
static void request_end(struct client *c)
{
    if (c->flags & CF_IN_FLIGHT) {
        c->flags &= ~CF_IN_FLIGHT;
        stat_add(&c->w->stats.in_flight, -1);
    }
    if (c->state == CS_BACKOFF)
        stat_add(&c->w->stats.retrying, -1);
    if (c->state == CS_QUEUED)
        client_dequeue(c);
    if (c->exclude) {
        pool_unref(c->exclude);
        c->exclude = NULL;
    }
}

static void on_request_head(struct client *c)
{
    struct lb_worker *w = c->w;
    uv_timer_stop(&c->timer);
    c->flags |= CF_IN_FLIGHT | CF_HEAD_DONE;
    stat_add(&w->stats.in_flight, 1);
    c->flags &= ~CF_HEAD_TIMER;
    c->t_head_us = lb_now_us();
    stat_add(&w->stats.requests, 1);
    if (c->req->method == HTTP_M_CONNECT) {
        client_reject(c, 501, "CONNECT is not supported");
        return;
    }
    const struct lb_config *cfg = lb_cfg(w->lb);
    if (cfg->rate_limit) {
        double rate = (double)cfg->rate_limit;
        double burst = cfg->rate_burst ? (double)cfg->rate_burst : rate;
        unsigned wait = ratelimit_take(&w->lb->ratelimit, lb_hash64(c->ip, c->ip_len), lb_now_us(),
                                       rate, burst);
        if (wait) {
            c->retry_after_s = wait;
            client_reject(c, 429, "too many requests from this address");
            return;
        }
    }
    if (!(c->req->flags & HTTP_F_KEEP_ALIVE) || w->stopping)
        c->flags |= CF_CLOSE_AFTER;
    if (build_request_head(c) < 0) {
        client_reject(c, 431, "request head too large");
        return;
    }
    c->retries = (int)lb_cfg(w->lb)->retries;
    client_dispatch(c, NULL);
}

static void client_process(struct client *c)
{
    while (!(c->flags & CF_CLOSED)) {
        size_t used;
        int ev;
        switch (c->state) {
        case CS_HEAD:
            if (c->rpos == c->rlen)
                return;
            if (!(c->flags & CF_HEAD_TIMER)) {
                c->flags |= CF_HEAD_TIMER;
                client_timer(c, (uint64_t)lb_cfg(LB(c))->timeout_header_ms);
            }
            ev = http_msg_feed(c->req, c->rbuf, c->rpos, c->rlen - c->rpos, &used);
            c->rpos += used;
            if (ev == HTTP_EV_ERROR) {
                client_reject(c, c->req->err_status, c->req->err_reason);
                return;
            }
            if (ev == HTTP_EV_NEED_MORE) {
                if (c->rlen == c->rcap && c->rcap >= RBUF_HEAD_MAX)
                    client_reject(c, 431, "request head too large");
                return;
            }
            on_request_head(c);
            continue;
        case CS_FORWARD:
        case CS_TUNNEL: {
            struct upstream *up = c->up;
            if (!up || (up->flags & UF_WRITING) ||
                (c->state == CS_FORWARD && (c->flags & CF_REQ_DONE))) {
                if (c->rlen == c->rcap)
                    client_read_stop(c);
                return;
            }
            if (c->rpos == c->rlen) {
                c->rpos = c->rlen = 0;
                return;
            }
            size_t start = c->rpos;
            if (c->state == CS_TUNNEL) {
                used = c->rlen - c->rpos;
                ev = HTTP_EV_NEED_MORE;
            } else {
                ev = http_msg_feed(c->req, c->rbuf, c->rpos, c->rlen - c->rpos, &used);
                if (ev == HTTP_EV_ERROR) {
                    /* A broken body after the head went out: nothing sane can follow. */
                    if (c->flags & CF_RESP_STARTED)
                        client_close(c);
                    else
                        client_reject(c, c->req->err_status, c->req->err_reason);
                    return;
                }
                if (ev == HTTP_EV_DONE)
                    c->flags |= CF_REQ_DONE;
            }
            c->rpos += used;
            if (!used)
                continue;
            uv_buf_t bufs[1] = {uv_buf_init(c->rbuf + start, (unsigned)used)};
            int rc = net_write((uv_stream_t *)&up->tcp, &up->wreq, bufs, 1, on_up_written);
            if (rc < 0) {
                if (c->state == CS_TUNNEL)
                    client_close(c);
                else
                    up_failed(up, uv_strerror(rc));
                return;
            }
            if (rc == 1)
                up->flags |= UF_WRITING;
            if (c->state == CS_FORWARD)
                forward_timer(c);
            continue;
        }
        default:
            return;
        }
    }
}

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    struct client *c = h->data;
    if (!c->req)
        c->req = msg_get(c->w);
    alloc_room(c->w, &c->rbuf, &c->rlen, &c->rpos, &c->rcap, c->state == CS_HEAD, out);
}

static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct client *c = s->data;
    if (nread > 0) {
        c->rlen += (size_t)nread;
        client_process(c);
        return;
    }
    if (nread == 0)
        return;
    if (nread == UV_ENOBUFS) {
        client_read_stop(c);
        return;
    }
    client_read_stop(c);
    c->flags |= CF_EOF;
    if ((c->state == CS_FORWARD && (c->flags & CF_REQ_DONE)) || c->state == CS_CLOSING) {
        /* Half-close after a whole request: answer it, then close. */
        c->flags |= CF_CLOSE_AFTER;
        return;
    }
    client_close(c);
}

static void client_read_start(struct client *c)
{
    if (!(c->flags & (CF_READING | CF_EOF | CF_CLOSED)) && c->state != CS_CONNECT &&
        c->state != CS_CLOSING && !(c->rbuf && c->rlen == c->rcap && c->rcap >= RBUF_HEAD_MAX)) {
        uv_read_start((uv_stream_t *)&c->tcp, client_alloc, on_client_read);
        c->flags |= CF_READING;
    }
}

static void on_client_timer(uv_timer_t *t)
{
    struct client *c = t->data;
    switch (c->state) {
    case CS_HEAD:
        if ((c->flags & CF_HEAD_TIMER) && c->rbuf && c->rlen) {
            log_client(c, LOG_INFO, "reading the request head", "header timeout");
            client_reject(c, 408, "request head timeout");
        } else {
            /* Nothing of a request arrived: close without a 408, which a
             * client holding an idle connection would take for the answer
             * to its next request (HAProxy's http-ignore-probes, nginx). */
            client_close(c); /* keep-alive idle timeout */
        }
        return;
    case CS_CONNECT:
    case CS_FORWARD:
        if (c->flags & CF_RESP_STARTED) {
            /* The response stalled mid-body: nothing can be sent any more. */
            log_client(c, LOG_WARN, "forwarding the response body", "body timeout");
            if (c->b)
                backend_failed(c->w, c->b, 0);
            stat_add(&c->w->stats.responses[0], 1);
            client_close(c);
            return;
        }
        if (c->state == CS_FORWARD && !(c->flags & CF_REQ_DONE)) {
            /* The client stalled mid-upload: its fault, not the backend's. */
            if (c->up)
                c->up->flags |= UF_NOREUSE;
            client_reject(c, 408, "request body timeout");
            return;
        }
        if (c->up)
            c->up->flags |= UF_NOREUSE;
        if (c->b)
            backend_failed(c->w, c->b, c->state == CS_CONNECT);
        log_client(c, LOG_WARN, c->state == CS_CONNECT ? "connecting" : "waiting for the response",
                   "upstream timeout");
        /* A connect timeout sent nothing, so it may go elsewhere; a response
         * timeout may have had effects and is not repeated. */
        client_retry_or_fail(c, c->state == CS_CONNECT ? RETRY_LOST : RETRY_NO, 504,
                             "gateway timeout: the backend did not answer in time");
        return;
    case CS_QUEUED:
        client_dequeue(c);
        stat_add(&c->w->stats.queue_timeouts, 1);
        client_reject(c, 503, "all backends are busy: queue timeout");
        return;
    case CS_BACKOFF: {
        stat_add(&c->w->stats.retrying, -1);
        struct backend *ex = c->exclude;
        c->exclude = NULL;
        c->state = CS_CONNECT; /* no longer counted as retrying */
        client_dispatch(c, ex);
        pool_unref(ex);
        return;
    }
    default:
        return;
    }
}

static void client_timer(struct client *c, uint64_t ms)
{
    uv_timer_start(&c->timer, on_client_timer, ms, 0);
}

/* While a request is forwarded: once all of it went out and until the
 * response head arrives, --timeout-upstream runs (armed once); otherwise
 * --timeout-body bounds inactivity, re-armed whenever body bytes move. */
static void forward_timer(struct client *c)
{
    const struct lb_config *cfg = lb_cfg(LB(c));
    if ((c->flags & CF_REQ_DONE) && !(c->flags & CF_RESP_STARTED)) {
        if (!(c->flags & CF_UP_TIMER)) {
            c->flags |= CF_UP_TIMER;
            client_timer(c, (uint64_t)cfg->timeout_upstream_ms);
        }
        return;
    }
    client_timer(c, (uint64_t)cfg->timeout_body_ms);
}

void proxy_on_accept(uv_stream_t *server, int status)
{
    struct lb_worker *w = server->data;
    if (status < 0 || w->stopping)
        return;
    struct client *c = xcalloc(1, sizeof *c);
    c->w = w;
    uv_tcp_init(&w->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        c->closes_pending = 1;
        list_init(&c->link);
        uv_close((uv_handle_t *)&c->tcp, on_client_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_timer_init(&w->loop, &c->timer);
    c->timer.data = c;
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        c->ip_len = net_ip_format((struct sockaddr *)&ss, c->ip, sizeof c->ip);
        net_addr_format((struct sockaddr *)&ss, c->peer, sizeof c->peer);
    }
    buf_init(&c->head, OUT_HEAD_MAX);
    buf_init(&c->out, OUT_HEAD_MAX);
    list_insert_tail(&w->clients, &c->link);
    stat_add(&w->stats.accepted, 1);
    stat_add(&w->stats.open, 1);
    c->state = CS_HEAD;
    /* The first request's head is due within the header timeout from
     * accept, so a connection that sends nothing is a slowloris too. */
    c->flags |= CF_HEAD_TIMER;
    long long max = lb_cfg(w->lb)->max_conns;
    if (max) {
        uint64_t open = 0;
        for (unsigned i = 0; i < w->lb->nthreads; i++)
            open += __atomic_load_n(&w->lb->workers[i].stats.open, __ATOMIC_RELAXED);
        if (open > (uint64_t)max) {
            stat_add(&w->stats.conn_limit_rejects, 1);
            client_reject(c, 503, "too many connections");
            return;
        }
    }
    client_timer(c, (uint64_t)lb_cfg(w->lb)->timeout_header_ms);
    client_read_start(c);
}

void proxy_stop(struct lb_worker *w)
{
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &w->clients)
    {
        struct client *c = list_entry(pos, struct client, link);
        /* Between requests (no parser allocated): nothing to finish. */
        if (c->state == CS_HEAD && !c->req)
            client_close(c);
        else
            c->flags |= CF_CLOSE_AFTER;
    }
    proxy_sweep(w);
}

void proxy_close_all(struct lb_worker *w)
{
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &w->clients)
    {
        client_close(list_entry(pos, struct client, link));
    }
    list_foreach_safe(pos, tmp, &w->idle_ups)
    {
        up_close(list_entry(pos, struct upstream, wlink));
    }
}

void proxy_sweep(struct lb_worker *w)
{
    uint64_t now = uv_now(&w->loop);
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &w->idle_ups)
    {
        struct upstream *up = list_entry(pos, struct upstream, wlink);
        if (w->stopping || now - up->idle_since_ms > UP_IDLE_MAX_MS ||
            backend_state(up->b) == BACKEND_DRAINING)
            up_close(up);
    }
}
