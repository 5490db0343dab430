/* The proxy's client connections (see proxy_int.h for the whole picture).
 *
 * A connection carries one transaction at a time; pipelined requests wait
 * in its read buffer and are answered in order. Between requests it holds
 * no buffer and no transaction: only its socket, its timer and its address.
 *
 *   CL_IDLE    no request: header timer (first request, from accept) or
 *                idle timer (after a request); reading on
 *   CL_TXN     c->txn owns the timer and the reading (txn_set_state)
 *   CL_LINGER  the last answer is out but the client was still sending a
 *                body we no longer want: half-close, drop what comes for up
 *                to LINGER_MS, then close (so the client reads the answer
 *                instead of a reset)
 *   CL_CLOSED  closing; freed in the close callbacks
 *
 * A connection counts once in lb->conns_open (the --max-conns check): added
 * at accept, subtracted in client_close, which runs once per connection.
 *
 * The read buffer is reset to its front only when all of it is used, and
 * never below the request parser's hold_off (a head, or an unfinished
 * trailer line, is read in place); it grows once to RBUF_HEAD_MAX for
 * either, never while a write points into it (px_may_grow).
 *
 * libuv rules: a handle is freed only in its close callback; a write's data
 * lives until its write callback. */
#include "lb/proxy.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/alloc.h"
#include "base/log.h"
#include "lb/proxy_int.h"
#include "net/net.h"

/* ---- buffers -------------------------------------------------------------- */

char *px_rbuf_get(struct lb_worker *w)
{
    if (w->nbuf_cache)
        return w->buf_cache[--w->nbuf_cache];
    return xmalloc(RBUF_SIZE);
}

void px_rbuf_put(struct lb_worker *w, char *p, size_t cap)
{
    if (!p)
        return;
    if (cap == RBUF_SIZE && w->nbuf_cache < POOL_MAX)
        w->buf_cache[w->nbuf_cache++] = p;
    else
        free(p);
}

void px_read_room(struct lb_worker *w, char **rbuf, size_t *rlen, size_t *rpos, size_t *rcap,
                  int may_grow, uv_buf_t *out)
{
    if (!*rbuf) {
        *rbuf = px_rbuf_get(w);
        *rcap = RBUF_SIZE;
        *rlen = *rpos = 0;
    }
    if (*rlen == *rcap && may_grow && *rcap < RBUF_HEAD_MAX) {
        char *n = xmalloc(RBUF_HEAD_MAX);
        memcpy(n, *rbuf, *rlen);
        px_rbuf_put(w, *rbuf, *rcap);
        *rbuf = n;
        *rcap = RBUF_HEAD_MAX;
    }
    out->base = *rbuf + *rlen;
    out->len = *rcap - *rlen;
}

void proxy_worker_init(struct lb_worker *w)
{
    struct proxy_worker *pw = xcalloc(1, sizeof *pw);
    pw->discard = xmalloc(DISCARD_SIZE);
    buf_init(&pw->logline, 4096);
    list_init(&pw->cwait);
    uv_mutex_init(&pw->wake_mu);
    w->proxy = pw;
}

void proxy_worker_start(struct lb_worker *w)
{
    struct proxy_worker *pw = PW(w);
    if (!w->lb->cache)
        return;
    uv_async_init(&w->loop, &pw->cache_wake, px_cache_wake);
    pw->cache_wake.data = w;
    pw->wake_open = 1;
}

void proxy_worker_free(struct lb_worker *w)
{
    struct proxy_worker *pw = w->proxy;
    if (!pw)
        return;
    for (unsigned i = 0; i < pw->ntxns; i++) {
        buf_free(&pw->txns[i]->head);
        buf_free(&pw->txns[i]->out);
        buf_free(&pw->txns[i]->cache_key);
        buf_free(&pw->txns[i]->cache_head);
        buf_free(&pw->txns[i]->cache_meta);
        buf_free(&pw->txns[i]->cache_body);
        free(pw->txns[i]);
    }
    for (unsigned i = 0; i < pw->nframes; i++) {
        buf_free(&pw->frames[i]->trailers);
        free(pw->frames[i]);
    }
    free(pw->discard);
    uv_mutex_destroy(&pw->wake_mu);
    buf_free(&pw->logline);
    free(pw->tls_in);
    free(pw);
    w->proxy = NULL;
}

/* ---- small helpers --------------------------------------------------------- */

void client_log(const struct client *c, const struct backend *b, int level, const char *action,
                const char *msg)
{
    if (level > log_level_g)
        return;
    char peer[INET6_ADDRSTRLEN + 8];
    snprintf(peer, sizeof peer, "%s:%u", c->ip, (unsigned)c->port);
    struct log_ctx ctx = {peer, b ? b->address : NULL, action};
    /* Per-connection lines come at request rate under attack: warnings and
     * errors share one limiter (the suppressed count goes on the next line). */
    if (level <= LOG_WARN)
        log_conn_rl(level, &ctx, "%s", msg);
    else
        log_conn(level, &ctx, "%s", msg);
}

static void on_client_timer(uv_timer_t *t);

void client_timer(struct client *c, uint64_t ms)
{
    uv_timer_start(&c->timer, on_client_timer, ms, 0);
}

/* ---- reading -------------------------------------------------------------- */

static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* May the connection's full read buffer grow: a head, or a trailer line the
 * request parser holds while no body write points into the buffer. */
static int client_may_grow(const struct client *c)
{
    const struct txn *t = c->txn;
    return !t || px_may_grow(&t->req, t->state == TX_HEAD, t->up_writing);
}

static void on_client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    struct client *c = h->data;
    if (c->tls) {
        *out = px_tls_room(c);
        return;
    }
    if (c->state == CL_LINGER) {
        out->base = PW(c->w)->discard;
        out->len = DISCARD_SIZE;
        return;
    }
    if (c->txn && (c->txn->flags & TF_ABANDONED)) {
        out->base = PW(c->w)->discard;
        out->len = DISCARD_SIZE;
        return;
    }
    px_read_room(c->w, &c->rbuf, &c->rlen, &c->rpos, &c->rcap, client_may_grow(c), out);
}

/* Does the connection want bytes from the client now? */
static int client_reading_want(const struct client *c)
{
    if (c->eof || c->state == CL_CLOSED)
        return 0;
    if (c->state != CL_TXN)
        return 1;
    const struct txn *t = c->txn;
    /* A full buffer: a head or a held trailer line may still grow it. */
    if (c->rbuf && c->rlen == c->rcap && (c->rcap >= RBUF_HEAD_MAX || !client_may_grow(c)))
        return 0;
    switch (t->state) {
    case TX_HEAD:
    case TX_SEND:
    case TX_TUNNEL:
        return 1;
    case TX_WAIT:
    case TX_RESPOND:
        /* The next request may come (pipelining), or the client's close;
         * or, after an early answer, the rest of a body nobody wants (read
         * and dropped, so that a client busy sending can get to reading). */
        return 1;
    case TX_END:
        return !(t->flags & TF_CLOSE); /* the connection moves on */
    default:
        return 0;
    }
}

void client_reading_update(struct client *c)
{
    int want = client_reading_want(c);
    if (want && !c->reading) {
        uv_read_start((uv_stream_t *)&c->tcp, on_client_alloc, on_client_read);
        c->reading = 1;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

/* ---- closing -------------------------------------------------------------- */

static void on_client_closed(uv_handle_t *h)
{
    struct client *c = h->data;
    if (--c->closes_pending)
        return;
    if (c->txn)
        txn_free(c->w, c->txn);
    px_rbuf_put(c->w, c->rbuf, c->rcap);
    px_tls_free(c);
    free(c);
}

void client_close(struct client *c)
{
    if (c->state == CL_CLOSED)
        return;
    c->state = CL_CLOSED;
    /* The transaction lets go of everything now; its memory (a pending
     * write's request and data) is freed after the close callbacks. */
    if (c->txn)
        txn_detach(c->txn);
    list_remove(&c->link);
    __atomic_fetch_sub(&c->w->lb->conns_open, 1, __ATOMIC_RELAXED);
    px_tls_close_notify(c);
    c->reading = 0;
    c->closes_pending = 2;
    uv_close((uv_handle_t *)&c->timer, on_client_closed);
    uv_close((uv_handle_t *)&c->tcp, on_client_closed);
}

/* The answer is out but the client may still be sending a body we did not
 * read: a close now would reset the connection and could destroy the answer
 * in the client's receive queue. Half-close and drop input for a while. */
static void client_linger(struct client *c)
{
    px_rbuf_put(c->w, c->rbuf, c->rcap);
    c->rbuf = NULL;
    c->rlen = c->rpos = c->rcap = 0;
    if (c->eof) {
        client_close(c);
        return;
    }
    uv_os_fd_t fd;
    px_tls_close_notify(c);
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
        shutdown(fd, SHUT_WR);
    c->state = CL_LINGER;
    client_timer(c, LINGER_MS);
    client_reading_update(c);
}

/* No request in progress: give the buffer back and wait for the next one. */
static void client_idle(struct client *c)
{
    if (c->w->stopping) {
        client_close(c);
        return;
    }
    if (c->rbuf && c->rpos == c->rlen) {
        px_rbuf_put(c->w, c->rbuf, c->rcap);
        c->rbuf = NULL;
        c->rlen = c->rpos = c->rcap = 0;
    }
    if (c->state != CL_IDLE) {
        c->state = CL_IDLE;
        /* Nothing of a request yet: the idle time applies. (Before the first
         * request the header timer armed at accept keeps running.) */
        client_timer(c, (uint64_t)lb_cfg(c->w->lb)->timeout_idle_ms);
    }
    client_reading_update(c);
}

/* The transaction ended (TX_END): close, linger, or make room for the next
 * request, which may already be in the buffer. */
static int client_next(struct client *c)
{
    struct txn *t = c->txn;
    unsigned flags = t->flags;
    c->txn = NULL;
    txn_free(c->w, t);
    c->served = 1;
    if (flags & TF_CLOSE) {
        if (flags & TF_ABANDONED)
            client_linger(c);
        else
            client_close(c);
        return -1;
    }
    if (c->rpos < c->rlen && c->rpos) {
        /* A pipelined request: its head must start at offset 0. */
        memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos;
        c->rpos = 0;
    }
    c->state = CL_TXN; /* so that client_idle arms the idle timer */
    return 0;
}

void client_run(struct client *c)
{
    while (c->state == CL_TXN || c->state == CL_IDLE) {
        if (!c->txn) {
            if (!c->rbuf || c->rpos == c->rlen) {
                client_idle(c);
                if (c->tls && c->state == CL_IDLE && px_tls_pull(c) > 0)
                    continue;
                return;
            }
            c->txn = txn_new(c);
            c->state = CL_TXN;
            txn_set_state(c->txn, TX_HEAD);
        }
        struct txn *t = c->txn;
        int r = txn_step(t);
        if (r == STEP_GONE)
            return;
        if (r == STEP_WAIT) {
            client_reading_update(c);
            if (c->tls && px_tls_pull(c) > 0)
                continue;
            if (c->state == CL_CLOSED)
                return;
            if (t->up) {
                up_read_update(t->up);
                if (t->up->tls && up_tls_pull(t->up) > 0)
                    continue;
            }
            return;
        }
        if (client_next(c) < 0)
            return;
    }
}

/* ---- events ---------------------------------------------------------------- */

static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct client *c = s->data;
    if (c->tls) {
        nread = px_tls_on_read(c, nread, buf);
        if (c->state == CL_CLOSED)
            return;
        if (nread > 0) {
            client_run(c);
            return;
        }
    }
    if (nread == 0)
        return;
    if (c->state == CL_LINGER || (c->txn && (c->txn->flags & TF_ABANDONED))) {
        /* Bytes of an abandoned body: dropped (they are in the discard
         * buffer). Its end closes a lingering connection; while the answer
         * is still on its way, it only means "close after". */
        if (nread < 0 && c->state == CL_LINGER) {
            client_close(c);
        } else if (nread < 0) {
            c->eof = 1;
            client_reading_update(c);
        }
        return;
    }
    if (nread > 0) {
        c->rlen += (size_t)nread;
        client_run(c);
        return;
    }
    if (nread == UV_ENOBUFS) {
        uv_read_stop(s);
        c->reading = 0;
        return;
    }
    c->eof = 1;
    client_reading_update(c);
    struct txn *t = c->txn;
    if (t && (t->state == TX_LOCAL ||
              ((t->flags & TF_REQ_DONE) && (t->state == TX_WAIT || t->state == TX_RESPOND)))) {
        /* Half-close after a whole request: answer it, then close. */
        t->flags |= TF_CLOSE;
        return;
    }
    client_close(c);
}

static void on_client_written(uv_write_t *req, int status)
{
    struct txn *t = container_of(req, struct txn, wreq);
    t->flags &= ~TF_WRITING;
    struct client *c = t->c;
    if (!c)
        return; /* the connection is closing */
    if (status < 0) {
        client_close(c);
        return;
    }
    client_run(c);
}

int client_write(struct txn *t, uv_buf_t *bufs, unsigned n)
{
    struct client *c = t->c;
    if (c->ghost) { /* nobody to write to (never reached: a stand-in swallows) */
        client_close(c);
        return -1;
    }
    if (c->tls)
        return px_tls_write(t, bufs, n);
    int rc = net_write((uv_stream_t *)&c->tcp, &t->wreq, bufs, n, on_client_written);
    if (rc < 0) {
        client_close(c);
        return rc;
    }
    if (rc == 1)
        t->flags |= TF_WRITING;
    return rc;
}

static void on_client_timer(uv_timer_t *tm)
{
    struct client *c = tm->data;
    switch (c->state) {
    case CL_TXN:
        txn_timeout(c->txn);
        client_run(c);
        return;
    case CL_IDLE:
        /* Nothing of a request arrived: close without a 408, which a client
         * holding an idle connection would take for the answer to its next
         * request (HAProxy's http-ignore-probes, nginx). */
    case CL_LINGER:
        client_close(c);
        return;
    default:
        return;
    }
}

/* ---- public entry points ---------------------------------------------------- */

static void on_ghost_start(uv_timer_t *tm)
{
    client_run(tm->data);
}

int client_ghost_start(struct client *c)
{
    struct lb_worker *w = c->w;
    if (w->stopping || !c->rbuf || !c->rpos || c->rpos > RBUF_SIZE)
        return -1;
    struct client *g = xcalloc(1, sizeof *g);
    g->w = w;
    uv_tcp_init(&w->loop, &g->tcp); /* never connected: closed with the stand-in */
    g->tcp.data = g;
    uv_timer_init(&w->loop, &g->timer);
    g->timer.data = g;
    g->rbuf = px_rbuf_get(w);
    g->rcap = RBUF_SIZE;
    memcpy(g->rbuf, c->rbuf, c->rpos);
    g->rlen = c->rpos;
    memcpy(g->ip, c->ip, sizeof g->ip);
    g->ip_len = c->ip_len;
    g->port = c->port;
    g->ghost = c->tls ? GHOST_TLS : GHOST_PLAIN;
    g->eof = 1; /* never read */
    g->state = CL_IDLE;
    list_insert_tail(&w->clients, &g->link); /* drained and closed like the others */
    __atomic_fetch_add(&w->lb->conns_open, 1, __ATOMIC_RELAXED);
    uv_timer_start(&g->timer, on_ghost_start, 0, 0);
    return 0;
}

void proxy_on_accept(uv_stream_t *server, int status)
{
    struct lb_listener *L = server->data;
    struct lb_worker *w = L->w;
    if (status < 0 || w->stopping)
        return;
    struct client *c = xcalloc(1, sizeof *c);
    c->w = w;
    uv_tcp_init(&w->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        c->closes_pending = 1;
        c->state = CL_CLOSED;
        uv_close((uv_handle_t *)&c->tcp, on_client_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_timer_init(&w->loop, &c->timer);
    c->timer.data = c;
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        c->ip_len = (uint8_t)net_ip_format((struct sockaddr *)&ss, c->ip, sizeof c->ip);
        c->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    }
    list_insert_tail(&w->clients, &c->link);
    stat_add(&w->stats.accepted, 1);
    struct tls_server *srv = __atomic_load_n(&L->l->tls, __ATOMIC_ACQUIRE);
    /* Counted before the check, uncounted when it closes (client_close),
     * refused or not: one atomic add, whatever the number of workers. */
    uint64_t open = __atomic_add_fetch(&w->lb->conns_open, 1, __ATOMIC_RELAXED);
    c->state = CL_IDLE;
    long long max = lb_cfg(w->lb)->max_conns;
    if (srv) {
        if (!PW(w)->tls_in)
            PW(w)->tls_in = xmalloc(TLS_IN_SIZE);
        if (px_tls_start(c, srv) < 0 || (max && open > (uint64_t)max)) {
            /* No plain-text 503 on a TLS port: just close. */
            stat_add(&w->stats.conn_limit_rejects, max && open > (uint64_t)max);
            client_close(c);
            return;
        }
    }
    if (max) {
        if (open > (uint64_t)max) {
            stat_add(&w->stats.conn_limit_rejects, 1);
            c->txn = txn_new(c);
            c->state = CL_TXN;
            txn_reject(c->txn, 503, "too many connections");
            client_run(c);
            return;
        }
    }
    /* The first request's head is due within the header timeout from
     * accept, so a connection that sends nothing is a slowloris too. */
    client_timer(c, (uint64_t)lb_cfg(w->lb)->timeout_header_ms);
    client_reading_update(c);
}

void proxy_stop(struct lb_worker *w)
{
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &w->clients)
    {
        struct client *c = list_entry(pos, struct client, link);
        if (c->state == CL_IDLE)
            client_close(c);
        else if (c->txn)
            c->txn->flags |= TF_CLOSE;
    }
    proxy_sweep(w);
}

void proxy_close_all(struct lb_worker *w)
{
    struct proxy_worker *pw = PW(w);
    if (pw->wake_open) {
        /* the loop's handles close next (uv_walk): no more wake-ups */
        uv_mutex_lock(&pw->wake_mu);
        pw->wake_open = 0;
        uv_mutex_unlock(&pw->wake_mu);
    }
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &w->clients)
    {
        client_close(list_entry(pos, struct client, link));
    }
    up_close_all(w);
}

void proxy_sweep(struct lb_worker *w)
{
    up_sweep(w);
}
