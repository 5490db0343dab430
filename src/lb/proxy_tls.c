/* TLS on the proxy's client connections (net/tls.c does the protocol).
 *
 * The socket stays a plain libuv stream. Ciphertext is read into the
 * worker's scratch buffer and fed to the session at once; the handshake runs
 * on the loop (an ECDSA P-256 handshake costs the server well under a
 * millisecond); plaintext is decrypted into the connection's read buffer
 * (c->rbuf) exactly where a plain read would have put it, so the
 * transaction state machine does not know TLS exists. What does not fit in
 * the read buffer stays in the session (at most one read's worth: reading
 * stops while the buffer is full) and client_run pulls it when room frees
 * up (px_tls_pull).
 *
 * Writes: client_write encrypts the transaction's buffers at once (copied
 * into records) and queues the ciphertext here. The transaction sees the
 * write as pending (TF_WRITING) until the socket took all of it, so a slow
 * reader still stops the response (backpressure as in plain HTTP). Output
 * the session makes by itself (handshake messages, tickets, alerts) goes
 * through the same queue.
 *
 * Bounds: the handshake is due within --timeout-header from accept (the
 * client's one timer); a failed handshake closes the connection; memory is
 * the session (OpenSSL frees its record buffers while idle), one read of
 * ciphertext and the queued output of one client_write. */
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "lb/proxy_int.h"

#define TLS_OUT_MAX (64u * 1024 * 1024) /* never reached: one write's output at a time */

/* ---- a TLS stream: the session and its write queue (client or upstream) ---- */

static struct px_tls *tls_new(uv_stream_t *stream, void *owner, void (*done)(struct px_tls *, int))
{
    struct px_tls *x = xcalloc(1, sizeof *x);
    x->stream = stream;
    x->owner = owner;
    x->done = done;
    buf_init(&x->wbuf, TLS_OUT_MAX);
    buf_init(&x->pend, TLS_OUT_MAX);
    return x;
}

void px_tls_release(struct px_tls *x)
{
    if (!x)
        return;
    tls_sess_free(&x->s);
    buf_free(&x->wbuf);
    buf_free(&x->pend);
    free(x);
}

static void on_tls_written(uv_write_t *req, int status);

int px_tls_flush(struct px_tls *x)
{
    size_t n = tls_sess_out_len(&x->s);
    if (n) {
        if (buf_reserve(&x->pend, n) < 0)
            return UV_ENOBUFS;
        x->pend.len += tls_sess_out_take(&x->s, x->pend.data + x->pend.len, n);
    }
    if (x->writing || x->pend.len == 0)
        return 0;
    uv_buf_t b = uv_buf_init(x->pend.data, (unsigned)x->pend.len);
    int w = uv_try_write(x->stream, &b, 1);
    if (w == UV_EAGAIN)
        w = 0;
    if (w < 0)
        return w;
    if ((size_t)w == x->pend.len) {
        buf_reset(&x->pend);
        return 0;
    }
    buf_consume(&x->pend, (size_t)w);
    struct buf tmp = x->wbuf;
    x->wbuf = x->pend;
    x->pend = tmp;
    buf_reset(&x->pend);
    b = uv_buf_init(x->wbuf.data, (unsigned)x->wbuf.len);
    int rc = uv_write(&x->wreq, x->stream, &b, 1, on_tls_written);
    if (rc < 0)
        return rc;
    x->writing = 1;
    return 0;
}

static void on_tls_written(uv_write_t *req, int status)
{
    struct px_tls *x = container_of(req, struct px_tls, wreq);
    x->writing = 0;
    buf_reset(&x->wbuf);
    if (status >= 0) {
        int rc = px_tls_flush(x);
        if (rc < 0)
            status = rc;
        else if (x->writing)
            return;
    }
    x->done(x, status);
}

int px_tls_writev(struct px_tls *x, uv_buf_t *bufs, unsigned n)
{
    if (tls_sess_writev(&x->s, bufs, n) < 0)
        return UV_EPROTO;
    int rc = px_tls_flush(x);
    if (rc < 0)
        return rc;
    if (x->writing)
        x->waiting = 1;
    return x->writing;
}

/* ---- client connections ------------------------------------------------------- */

/* The client's write queue drained, or a write failed. */
static void client_tls_done(struct px_tls *x, int status)
{
    struct client *c = x->owner;
    int waited = x->waiting;
    x->waiting = 0;
    if (waited && c->txn)
        c->txn->flags &= ~TF_WRITING;
    if (c->state == CL_CLOSED || status < 0) {
        client_close(c);
        return;
    }
    if (waited)
        client_run(c);
}

int px_tls_start(struct client *c, struct tls_server *srv)
{
    struct px_tls *x = tls_new((uv_stream_t *)&c->tcp, c, client_tls_done);
    if (tls_sess_server(&x->s, srv) < 0) {
        px_tls_release(x);
        return -1;
    }
    c->tls = x;
    return 0;
}

void px_tls_free(struct client *c)
{
    px_tls_release(c->tls);
    c->tls = NULL;
}

int px_tls_write(struct txn *t, uv_buf_t *bufs, unsigned n)
{
    struct client *c = t->c;
    int rc = px_tls_writev(c->tls, bufs, n);
    if (rc < 0) {
        client_close(c);
        return UV_EPIPE;
    }
    if (rc == 1)
        t->flags |= TF_WRITING;
    return rc;
}

void px_tls_close_notify(struct client *c)
{
    struct px_tls *x = c->tls;
    if (!x || !x->s.established || x->writing || x->pend.len)
        return;
    tls_sess_shutdown(&x->s);
    char out[256];
    size_t n = tls_sess_out_take(&x->s, out, sizeof out);
    if (n) {
        uv_buf_t b = uv_buf_init(out, (unsigned)n);
        (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1); /* best effort: closing anyway */
    }
}

/* Is what the client sends now dropped (an abandoned body, lingering)? */
static int dropping(const struct client *c)
{
    return c->state == CL_LINGER || (c->txn && (c->txn->flags & TF_ABANDONED));
}

/* Decrypt what the session holds into the read buffer (or drop it): the
 * count added to c->rlen, or TLS_EOF / -1. */
static ssize_t decrypt(struct client *c)
{
    struct px_tls *x = c->tls;
    ssize_t added = 0;
    for (;;) {
        uv_buf_t room;
        if (dropping(c)) {
            room.base = PW(c->w)->discard;
            room.len = DISCARD_SIZE;
        } else {
            const struct txn *t = c->txn;
            int grow = !t || px_may_grow(&t->req, t->state == TX_HEAD, t->up_writing);
            px_read_room(c->w, &c->rbuf, &c->rlen, &c->rpos, &c->rcap, grow, &room);
            if (room.len == 0)
                return added;
        }
        ssize_t n = tls_sess_read(&x->s, room.base, room.len);
        if (n < 0)
            return added ? added : n;
        if (n == 0)
            return added;
        if (!dropping(c)) {
            c->rlen += (size_t)n;
            added += n;
        }
    }
}

static void count(struct client *c, uint64_t *field)
{
    stat_add(field, 1);
}

ssize_t px_tls_on_read(struct client *c, ssize_t nread, const uv_buf_t *buf)
{
    struct px_tls *x = c->tls;
    if (nread <= 0)
        return nread;
    if (tls_sess_feed(&x->s, buf->base, (size_t)nread) < 0)
        return UV_ENOMEM;
    if (!x->s.established) {
        int hs = tls_sess_handshake(&x->s);
        if (hs < 0) {
            count(c, &c->w->stats.tls_failed);
            client_log(c, NULL, LOG_DEBUG, "tls", "handshake failed");
            px_tls_flush(x); /* the alert, if the socket takes it */
            return UV_EPROTO;
        }
        if (hs == 1)
            count(c, tls_sess_resumed(&x->s) ? &c->w->stats.tls_resumed : &c->w->stats.tls_full);
    }
    ssize_t n = x->s.established ? decrypt(c) : 0;
    if (px_tls_flush(x) < 0)
        return UV_EPIPE;
    if (n == TLS_EOF)
        return UV_EOF;
    if (n < 0)
        return UV_EPROTO;
    return n;
}

ssize_t px_tls_pull(struct client *c)
{
    struct px_tls *x = c->tls;
    if (!x->s.established || !c->reading || !tls_sess_has_input(&x->s))
        return 0;
    ssize_t n = decrypt(c);
    if (px_tls_flush(x) < 0) {
        client_close(c);
        return -1;
    }
    return n > 0 ? n : 0;
}

uv_buf_t px_tls_room(struct client *c)
{
    return uv_buf_init(PW(c->w)->tls_in, TLS_IN_SIZE);
}

/* ---- upstream connections (--backend-tls) ---------------------------------------- */

/* The upstream's write queue drained, or a write failed (as on_up_written). */
static void up_tls_done(struct px_tls *x, int status)
{
    struct upstream *up = x->owner;
    int waited = x->waiting;
    x->waiting = 0;
    if (up->flags & UF_CLOSING)
        return;
    struct txn *t = up->t;
    if (!t || !waited) {
        if (status < 0)
            up->flags |= UF_NOREUSE;
        return;
    }
    t->up_writing = 0;
    t->body_stall_ms += uv_now(&up->w->loop) - t->up_write_t0_ms;
    if (status < 0)
        txn_up_write_failed(t);
    client_run(t->c);
}

int px_tls_upstream(struct upstream *up, void *client_ctx, const char *host)
{
    struct px_tls *x = tls_new((uv_stream_t *)&up->tcp, up, up_tls_done);
    if (tls_sess_client(&x->s, client_ctx, NULL, NULL) < 0) {
        px_tls_release(x);
        return -1;
    }
    if (host[0] && tls_sess_expect_host(&x->s, host) < 0) {
        px_tls_release(x);
        return -1;
    }
    up->tls = x;
    return 0;
}
