/* Upstream connections and the response path.
 *
 * An upstream connection belongs to one backend and to this worker. While a
 * transaction uses it, up->t is set and its bytes land in the
 * transaction's response buffer; between requests it waits in the
 * backend's per-thread idle list with no buffer, reading only to notice
 * the backend closing it (any byte there is a protocol error: close).
 *
 * A response head decides how the backend is judged: a 5xx is a failure
 * (toward --eject-after) unless it is an overload answer (429, or 503 with
 * Retry-After: counted apart, never a failure); a 4xx, or any early answer
 * to a request whose body was still coming, is never a failure. A
 * 502/503/504 to a replayable request goes to another backend within the
 * retry budget. The response buffer keeps an unfinished trailer line in
 * place like the client's (px_may_grow). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "lb/proxy_int.h"
#include "net/net.h"

/* ---- lifetime -------------------------------------------------------------------- */

static void on_up_closed(uv_handle_t *h)
{
    struct upstream *up = h->data;
    pool_unref(up->b);
    px_tls_release(up->tls);
    free(up);
}

void up_close(struct upstream *up)
{
    if (up->flags & UF_CLOSING)
        return;
    up->flags |= UF_CLOSING;
    list_remove(&up->idle_link);
    list_remove(&up->wlink);
    if (up->t) {
        up->t->up = NULL;
        up->t->up_writing = 0; /* the pending write is cancelled with the handle */
        up->t = NULL;
    }
    uv_close((uv_handle_t *)&up->tcp, on_up_closed);
}

struct upstream *up_take_idle(struct lb_worker *w, struct backend *b)
{
    struct backend_thread *bt = &b->per_thread[w->id];
    if (list_empty(&bt->idle))
        return NULL;
    struct upstream *up = list_entry(bt->idle.next, struct upstream, idle_link);
    list_remove(&up->idle_link);
    list_remove(&up->wlink);
    return up;
}

void up_release(struct txn *t, int reuse)
{
    struct upstream *up = t->up;
    struct lb_worker *w = t->w;
    up->t = NULL;
    t->up = NULL;
    if (!reuse) {
        up_close(up);
        return;
    }
    up->flags = (up->flags & (UF_CONNECTED | UF_READING)) | UF_REUSED;
    up->idle_since_ms = uv_now(&w->loop);
    list_insert_head(&up->b->per_thread[w->id].idle, &up->idle_link);
    list_insert_head(&w->idle_ups, &up->wlink);
    up_read_update(up); /* to notice the backend closing it */
}

/* ---- reading ----------------------------------------------------------------------- */

static void on_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* May the response buffer grow when full: a head, or a trailer line the
 * response parser holds while no client write points into the buffer. */
static int up_may_grow(const struct txn *t)
{
    int in_head = t->state != TX_RESPOND && t->state != TX_TUNNEL;
    return px_may_grow(&t->resp, in_head, (t->flags & TF_WRITING) != 0);
}

static void up_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    struct upstream *up = h->data;
    struct txn *t = up->t;
    if (!t || up->tls) {
        /* TLS: ciphertext lands in the scratch buffer, plaintext is
         * decrypted into the response buffer (up_tls_read). */
        out->base = up->tls ? PW(up->w)->tls_in : PW(up->w)->discard;
        out->len = up->tls ? TLS_IN_SIZE : DISCARD_SIZE;
        return;
    }
    px_read_room(up->w, &t->rbuf, &t->rlen, &t->rpos, &t->rcap, up_may_grow(t), out);
}

void up_read_update(struct upstream *up)
{
    struct txn *t = up->t;
    int want = !(up->flags & (UF_CLOSING | UF_EOF)) && (up->flags & (UF_CONNECTED | UF_TLS_HS));
    if (want && t && t->rbuf && t->rlen == t->rcap && (t->rcap >= RBUF_HEAD_MAX || !up_may_grow(t)))
        want = 0; /* full: the client has to take some first */
    if (want && !(up->flags & UF_READING)) {
        uv_read_start((uv_stream_t *)&up->tcp, up_alloc, on_up_read);
        up->flags |= UF_READING;
    } else if (!want && (up->flags & UF_READING)) {
        uv_read_stop((uv_stream_t *)&up->tcp);
        up->flags &= ~UF_READING;
    }
}

/* The TLS handshake with the backend failed, or TCP did: like a refused
 * connect (nothing was sent). */
static void up_connect_failed(struct upstream *up, const char *why)
{
    struct txn *t = up->t;
    struct client *c = t->c;
    __atomic_fetch_add(&up->b->per_thread[up->w->id].connect_fails, 1, __ATOMIC_RELAXED);
    txn_backend_failed(up->w, up->b, 1);
    client_log(c, up->b, LOG_WARN, "connecting to the backend", why);
    txn_retry_or_fail(t, RETRY_LOST, 502, "bad gateway: cannot connect to the backend");
    client_run(c);
}

/* Decrypt what the session holds into the response buffer. Bytes added;
 * *end set to UV_EOF (close_notify) or UV_EPROTO when the stream ended. */
static ssize_t up_tls_decrypt(struct upstream *up, int *end)
{
    struct txn *t = up->t;
    ssize_t added = 0;
    for (;;) {
        uv_buf_t room;
        px_read_room(up->w, &t->rbuf, &t->rlen, &t->rpos, &t->rcap, up_may_grow(t), &room);
        if (room.len == 0)
            return added;
        ssize_t n = tls_sess_read(&up->tls->s, room.base, room.len);
        if (n == 0)
            return added;
        if (n < 0) {
            *end = n == TLS_EOF ? UV_EOF : UV_EPROTO;
            return added;
        }
        t->rlen += (size_t)n;
        added += n;
    }
}

static void up_tls_read(struct upstream *up, ssize_t nread, const uv_buf_t *buf)
{
    struct px_tls *x = up->tls;
    struct txn *t = up->t;
    if (tls_sess_feed(&x->s, buf->base, (size_t)nread) < 0) {
        up_close(up);
        return;
    }
    if (!x->s.established) {
        int hs = tls_sess_handshake(&x->s);
        int frc = px_tls_flush(x);
        if (hs < 0 || frc < 0) {
            up->flags |= UF_NOREUSE;
            if (t && t->state == TX_CONNECT)
                up_connect_failed(up, "TLS handshake failed");
            else
                up_close(up);
            return;
        }
        if (hs == 0)
            return;
        up->flags = (up->flags & ~UF_TLS_HS) | UF_CONNECTED;
        if (t && t->state == TX_CONNECT) {
            txn_set_state(t, TX_SEND);
            client_run(t->c);
        }
        return;
    }
    if (!t) {
        /* Idle: a session ticket is fine; data, close_notify or garbage end it. */
        ssize_t n = tls_sess_read(&x->s, PW(up->w)->discard, DISCARD_SIZE);
        if (n != 0 || px_tls_flush(x) < 0)
            up_close(up);
        return;
    }
    int end = 0;
    if (up_tls_decrypt(up, &end) > 0)
        up->flags |= UF_GOT_BYTES;
    px_tls_flush(x); /* a failure shows on the next write */
    if (end) {
        up->flags |= UF_EOF;
        up->eof_err = end;
        up_read_update(up);
    }
    client_run(t->c);
}

ssize_t up_tls_pull(struct upstream *up)
{
    struct txn *t = up->t;
    if (!t || !up->tls || !up->tls->s.established || !(up->flags & UF_READING) ||
        !tls_sess_has_input(&up->tls->s))
        return 0;
    int end = 0;
    ssize_t n = up_tls_decrypt(up, &end);
    if (end) {
        up->flags |= UF_EOF;
        up->eof_err = end;
        up_read_update(up);
        return 1;
    }
    return n;
}

static void on_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct upstream *up = s->data;
    struct txn *t = up->t;
    if (nread == 0)
        return;
    if (up->tls && nread > 0) {
        up_tls_read(up, nread, buf);
        return;
    }
    if ((up->flags & UF_TLS_HS) && t && t->state == TX_CONNECT) {
        up->flags |= UF_NOREUSE;
        up_connect_failed(up, "the backend closed during the TLS handshake");
        return;
    }
    if (!t) {
        /* Bytes on an idle connection (the backend broke protocol) or its
         * close: either way it is done. */
        up_close(up);
        return;
    }
    if (nread > 0) {
        t->rlen += (size_t)nread;
        up->flags |= UF_GOT_BYTES;
    } else {
        /* The end (or a reset) is seen once the bytes before it are
         * processed: an early answer sits in front of it. */
        up->flags |= UF_EOF;
        up->eof_err = nread == UV_ENOBUFS ? UV_EOF : (int)nread;
        up_read_update(up);
    }
    client_run(t->c);
}

/* ---- writing ------------------------------------------------------------------------ */

static void on_up_written(uv_write_t *req, int status)
{
    struct upstream *up = req->handle->data;
    if (up->flags & UF_CLOSING)
        return;
    struct txn *t = up->t;
    if (!t)
        return;
    t->up_writing = 0;
    /* The time the backend kept us waiting does not count against the
     * client's body rate. */
    t->body_stall_ms += uv_now(&up->w->loop) - t->up_write_t0_ms;
    if (status < 0)
        txn_up_write_failed(t);
    client_run(t->c);
}

int up_write(struct txn *t, uv_buf_t *bufs, unsigned n)
{
    struct upstream *up = t->up;
    if (up->flags & UF_WRITE_FAILED)
        return 0; /* the backend stopped reading: drop, its answer decides */
    if (up->tls) {
        int r = px_tls_writev(up->tls, bufs, n);
        if (r == 1) {
            t->up_writing = 1;
            t->up_write_t0_ms = uv_now(&t->w->loop);
        }
        return r < 0 ? r : 0;
    }
    int rc = net_write((uv_stream_t *)&up->tcp, &up->wreq, bufs, n, on_up_written);
    if (rc == 1) {
        t->up_writing = 1;
        t->up_write_t0_ms = uv_now(&t->w->loop);
    }
    return rc < 0 ? rc : 0;
}

/* ---- connecting --------------------------------------------------------------------- */

static void on_up_connect(uv_connect_t *req, int status)
{
    struct upstream *up = req->handle->data;
    if (up->flags & UF_CLOSING)
        return;
    struct txn *t = up->t;
    struct client *c = t->c;
    if (status < 0) {
        /* Nothing was sent: any request may go to another backend. */
        up_connect_failed(up, uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&up->tcp, 1);
    if (up->tls) {
        /* The ClientHello; TX_SEND once the handshake is done (within the
         * connect timeout). */
        up->flags |= UF_TLS_HS;
        up_read_update(up);
        if (tls_sess_handshake(&up->tls->s) < 0 || px_tls_flush(up->tls) < 0)
            up_connect_failed(up, "TLS handshake failed");
        return;
    }
    up->flags |= UF_CONNECTED;
    txn_set_state(t, TX_SEND);
    client_run(c);
}

int up_open(struct txn *t, struct backend *b)
{
    struct lb_worker *w = t->w;
    struct upstream *up = xcalloc(1, sizeof *up);
    up->w = w;
    up->b = b;
    list_init(&up->idle_link);
    list_init(&up->wlink);
    uv_tcp_init(&w->loop, &up->tcp);
    up->tcp.data = up;
    if (w->lb->up_tls) {
        char host[BACKEND_ADDR_MAX];
        snprintf(host, sizeof host, "%s", b->address);
        char *colon = strrchr(host, ':');
        if (colon)
            *colon = '\0';
        size_t hl = strlen(host);
        if (hl > 1 && host[0] == '[' && host[hl - 1] == ']') { /* [v6] */
            memmove(host, host + 1, hl - 2);
            host[hl - 2] = '\0';
        }
        if (!PW(w)->tls_in)
            PW(w)->tls_in = xmalloc(TLS_IN_SIZE);
        if (px_tls_upstream(up, w->lb->up_tls, host) < 0) {
            up->flags |= UF_CLOSING;
            pool_ref(b);
            uv_close((uv_handle_t *)&up->tcp, on_up_closed);
            return -ENOMEM;
        }
    }
    __atomic_fetch_add(&b->per_thread[w->id].connects, 1, __ATOMIC_RELAXED);
    int rc = uv_tcp_connect(&up->creq, &up->tcp, (const struct sockaddr *)&b->addr, on_up_connect);
    if (rc < 0) {
        pool_ref(b);
        up->flags |= UF_CLOSING;
        uv_close((uv_handle_t *)&up->tcp, on_up_closed);
        return rc;
    }
    pool_ref(b);
    up->t = t;
    t->up = up;
    return 0;
}

/* ---- the response -------------------------------------------------------------------- */

/* A response head arrived. 0 to go on, -1 when the transaction went
 * elsewhere (a retry, a 502). In: TX_SEND, TX_WAIT (interim answers also
 * in TX_RESPOND is impossible: a final head ends the head phase).
 * Out: unchanged (interim), TX_RESPOND, or a failure state. */
static int on_response_head(struct txn *t)
{
    struct lb_worker *w = t->w;
    const struct http_msg *m = &t->resp;
    int st = m->status;
    buf_reset(&t->out);
    if (st >= 100 && st < 200 && st != 101) {
        /* Interim answers go to HTTP/1.1 clients only (RFC 9110 15.2), and
         * not after a stale answer (a background revalidation). */
        if ((t->req.version_major == 1 && t->req.version_minor == 0) || t->cache_bg)
            return 0;
        t->flags |= TF_STARTED;
        return msg_build_response_head(t) < 0 ? -1 : 0;
    }
    if (st == 101 && !(t->req.flags & HTTP_F_UPGRADE)) {
        t->up->flags |= UF_NOREUSE;
        txn_up_failed(t, "101 to a request that asked for no upgrade");
        return -1;
    }
    /* An answer before the whole request went out (RFC 9112 9.5): the
     * backend refuses the body (413...) and may close. Forward it, send no
     * more, close the client connection after it. Not a failure. */
    int early = !(t->flags & TF_REQ_DONE);
    hist_record(&t->b->per_thread[w->id].ttfb, clock_mono_us() - t->t_sent_us);
    /* Overload is not failure: a 429, or a 503 with Retry-After, is a
     * backend shedding load on purpose, cheaply. Counting it toward
     * ejection would move its load onto the others and overload them in
     * turn (a cascade); it counts neither way, only in its own counter. */
    int overload = msg_response_overload(t);
    if (overload)
        __atomic_fetch_add(&t->b->overloads, 1, __ATOMIC_RELAXED);
    if (st >= 500 && !early) {
        if (!overload)
            txn_backend_failed(w, t->b, 0);
        /* A 502/503/504 (an overload 503 too) for a request that is safe
         * to repeat goes to another backend instead of to the client,
         * within the retry budget. */
        if (st >= 502 && st <= 504 && (t->flags & TF_REPLAYABLE) && !(t->flags & TF_STARTED) &&
            t->retries > 0 && txn_retry_budget(w)) {
            t->up->flags |= UF_NOREUSE;
            txn_retry_or_fail(t, RETRY_ANSWERED, 502, "bad gateway");
            return -1;
        }
    } else if (st < 500 && !overload) {
        pool_report_success(t->b);
    }
    if (!t->cache_bg)
        txn_count_response(t, st);
    else
        t->status = st; /* a background revalidation's: for its log line, not counted */
    if (early)
        t->flags |= TF_ABANDONED;
    if (!(t->req.flags & HTTP_F_KEEP_ALIVE) || early || (m->flags & HTTP_F_BODY_UNTIL_EOF) ||
        w->stopping)
        t->flags |= TF_CLOSE;
    t->flags |= TF_STARTED;
    if (t->xc && st >= 200 && px_cache_on_response(t)) {
        txn_set_state(t, TX_RESPOND);
        return 0;
    }
    if (msg_build_response_head(t) < 0) {
        t->up->flags |= UF_NOREUSE;
        t->flags &= ~TF_STARTED;
        txn_up_failed(t, "response head too large");
        return -1;
    }
    if ((m->flags & HTTP_F_CHUNKED) && !(m->flags & HTTP_F_NO_BODY) && !t->resp_frame)
        t->resp_frame = frame_get(w);
    txn_set_state(t, TX_RESPOND);
    return 0;
}

/* The backend's side ended and every byte before it is handled. */
static void on_up_eof(struct txn *t)
{
    struct upstream *up = t->up;
    if (t->state == TX_TUNNEL) {
        client_close(t->c);
        return;
    }
    if (t->state == TX_RESPOND && (t->resp.flags & HTTP_F_BODY_UNTIL_EOF) &&
        http_msg_eof(&t->resp) == HTTP_EV_DONE) {
        up->flags |= UF_NOREUSE;
        t->flags |= TF_RESP_DONE;
        if (t->xc)
            px_cache_response_done(t);
        return;
    }
    txn_up_failed(t, up->eof_err == UV_EOF ? "the backend closed the connection"
                                           : uv_strerror(up->eof_err));
}

/* A response body that cannot be forwarded: the client connection is cut
 * when a byte went out, else the attempt fails like a broken response. */
static void resp_body_broken(struct txn *t, const char *reason)
{
    if ((t->flags & TF_STARTED) && !t->cache_bg) {
        txn_count_response(t, 0);
        client_close(t->c);
    } else {
        t->up->flags |= UF_NOREUSE;
        txn_up_failed(t, reason);
    }
}

/* Parse and forward what the upstream sent, until its bytes are used or a
 * write to the client is pending. In: TX_SEND, TX_WAIT, TX_RESPOND,
 * TX_TUNNEL. Out: the same, TX_RESPOND (a final head), TF_RESP_DONE set
 * (complete), a failure state, or the connection closed. 1 on progress. */
int up_pump_response(struct txn *t)
{
    struct upstream *up = t->up;
    int progress = 0;
    while (t->c && t->up == up && !(t->flags & TF_RESP_DONE)) {
        if (t->flags & TF_WRITING)
            return progress;
        int in_body = t->state == TX_RESPOND || t->state == TX_TUNNEL;
        if (t->rpos == t->rlen) {
            /* All used: start over at the front, unless the parser holds an
             * unfinished trailer line there (read in place when it ends). */
            if (in_body && t->rbuf && t->resp.hold_off == HTTP_NO_HOLD)
                t->rpos = t->rlen = 0;
            if (in_body && px_trailer_stuck(&t->resp, t->rlen, t->rcap)) {
                resp_body_broken(t, "trailer section too large");
                return 1;
            }
            if (up->flags & UF_EOF) {
                on_up_eof(t);
                return 1;
            }
            return progress;
        }
        progress = 1;
        if (t->state == TX_TUNNEL) {
            uv_buf_t bufs[1] = {uv_buf_init(t->rbuf + t->rpos, (unsigned)(t->rlen - t->rpos))};
            t->rpos = t->rlen;
            if (client_write(t, bufs, 1) < 0)
                return 1;
            continue;
        }
        uv_buf_t head = {0}, bufs[2], *iov = bufs;
        unsigned n = 0;
        int have_head = 0, ev;
        if (!in_body) {
            size_t used;
            ev = http_msg_feed(&t->resp, t->rbuf, t->rpos, t->rlen - t->rpos, &used);
            t->rpos += used;
            if (ev == HTTP_EV_ERROR) {
                up->flags |= UF_NOREUSE;
                txn_up_failed(t, t->resp.err_reason ? t->resp.err_reason : "invalid response");
                return 1;
            }
            if (ev == HTTP_EV_NEED_MORE)
                continue;
            /* HTTP_EV_HEAD */
            if (on_response_head(t) < 0)
                return 1;
            if (t->out.len) {
                head = uv_buf_init(t->out.data, (unsigned)t->out.len);
                have_head = 1;
            }
        }
        /* Body bytes (those that came with the head go in the same write). */
        size_t start = t->rpos;
        if (t->resp_frame && t->state == TX_RESPOND) {
            size_t pos = t->rpos;
            unsigned before = t->resp_frame->n;
            ev = frame_feed(t->resp_frame, &t->resp, t->rbuf, &pos, t->rlen);
            t->rpos = pos;
            if (t->cache_store)
                for (unsigned i = before; i < t->resp_frame->n; i++)
                    px_cache_body(t, t->resp_frame->piece[i], t->resp_frame->plen[i]);
            if (ev != HTTP_EV_ERROR)
                iov = frame_iov(t->resp_frame, ev == HTTP_EV_DONE, have_head ? &head : NULL, &n);
            if (t->cache_swallow)
                n = 0;
        } else {
            size_t used;
            ev = http_msg_feed(&t->resp, t->rbuf, t->rpos, t->rlen - t->rpos, &used);
            t->rpos += used;
            if (have_head)
                bufs[n++] = head;
            if (used && t->cache_store)
                px_cache_body(t, t->rbuf + start, used);
            if (used && !t->cache_swallow)
                bufs[n++] = uv_buf_init(t->rbuf + start, (unsigned)used);
        }
        if (ev == HTTP_EV_ERROR) {
            resp_body_broken(t, "invalid response body");
            return 1;
        }
        int interim = t->resp.status < 200 && t->resp.status != 101;
        if (n && client_write(t, iov, n) < 0)
            return 1;
        if (n && t->state == TX_RESPOND)
            client_timer(t->c, (uint64_t)lb_cfg(t->w->lb)->timeout_body_ms);
        if (ev != HTTP_EV_DONE)
            continue;
        if (interim) {
            /* 1xx done: the final response follows on the same connection.
             * A client that waited for "100 Continue" starts its body now:
             * its pace is measured from here. */
            if (t->state == TX_SEND)
                txn_body_restart(t);
            http_msg_reset(&t->resp);
            t->resp.request_was_head = (t->flags & TF_HEAD_METHOD) != 0;
            if (t->flags & TF_WRITING)
                return 1; /* compacted when the write is out (next pass) */
            memmove(t->rbuf, t->rbuf + t->rpos, t->rlen - t->rpos);
            t->rlen -= t->rpos;
            t->rpos = 0;
            continue;
        }
        if (t->resp.status == 101) {
            txn_set_state(t, TX_TUNNEL);
            continue;
        }
        t->flags |= TF_RESP_DONE;
        /* Stored before the last write completes: a client that sees the
         * end of this answer finds it in the cache. */
        if (t->xc)
            px_cache_response_done(t);
        return 1;
    }
    return progress;
}

/* ---- housekeeping -------------------------------------------------------------------- */

void up_sweep(struct lb_worker *w)
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

void up_close_all(struct lb_worker *w)
{
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &w->idle_ups)
    {
        up_close(list_entry(pos, struct upstream, wlink));
    }
}
