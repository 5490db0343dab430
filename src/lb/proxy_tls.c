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

struct px_tls {
    struct tls_sess s;
    struct client *c;
    uv_write_t wreq;
    struct buf wbuf; /* the ciphertext the pending write points into */
    struct buf pend; /* ciphertext made while that write is pending */
    uint8_t writing; /* a uv_write of wbuf is pending */
    uint8_t waiting; /* the transaction's write waits for the queue to drain */
};

int px_tls_start(struct client *c, struct tls_server *srv)
{
    struct px_tls *x = xcalloc(1, sizeof *x);
    if (tls_sess_server(&x->s, srv) < 0) {
        free(x);
        return -1;
    }
    x->c = c;
    buf_init(&x->wbuf, TLS_OUT_MAX);
    buf_init(&x->pend, TLS_OUT_MAX);
    c->tls = x;
    return 0;
}

void px_tls_free(struct client *c)
{
    struct px_tls *x = c->tls;
    if (!x)
        return;
    tls_sess_free(&x->s);
    buf_free(&x->wbuf);
    buf_free(&x->pend);
    free(x);
    c->tls = NULL;
}

static void on_tls_written(uv_write_t *req, int status);

/* Move the session's output towards the socket: straight when it takes it,
 * else by a write of its own. 0, or a libuv error (the caller closes). */
static int tls_flush(struct client *c)
{
    struct px_tls *x = c->tls;
    size_t n = tls_sess_out_len(&x->s);
    if (n) {
        if (buf_reserve(&x->pend, n) < 0)
            return UV_ENOBUFS;
        x->pend.len += tls_sess_out_take(&x->s, x->pend.data + x->pend.len, n);
    }
    if (x->writing || x->pend.len == 0)
        return 0;
    uv_buf_t b = uv_buf_init(x->pend.data, (unsigned)x->pend.len);
    int w = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
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
    int rc = uv_write(&x->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_tls_written);
    if (rc < 0)
        return rc;
    x->writing = 1;
    return 0;
}

static void on_tls_written(uv_write_t *req, int status)
{
    struct px_tls *x = container_of(req, struct px_tls, wreq);
    struct client *c = x->c;
    x->writing = 0;
    buf_reset(&x->wbuf);
    if (c->state == CL_CLOSED || status < 0) {
        if (x->waiting && c->txn)
            c->txn->flags &= ~TF_WRITING;
        x->waiting = 0;
        client_close(c);
        return;
    }
    if (tls_flush(c) < 0) {
        client_close(c);
        return;
    }
    if (!x->writing && x->waiting) {
        x->waiting = 0;
        if (c->txn)
            c->txn->flags &= ~TF_WRITING;
        client_run(c);
    }
}

int px_tls_write(struct txn *t, uv_buf_t *bufs, unsigned n)
{
    struct client *c = t->c;
    struct px_tls *x = c->tls;
    if (tls_sess_writev(&x->s, bufs, n) < 0 || tls_flush(c) < 0) {
        client_close(c);
        return UV_EPIPE;
    }
    if (!x->writing)
        return 0;
    x->waiting = 1;
    t->flags |= TF_WRITING;
    return 1;
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
            tls_flush(c); /* the alert, if the socket takes it */
            return UV_EPROTO;
        }
        if (hs == 1)
            count(c, tls_sess_resumed(&x->s) ? &c->w->stats.tls_resumed : &c->w->stats.tls_full);
    }
    ssize_t n = x->s.established ? decrypt(c) : 0;
    if (tls_flush(c) < 0)
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
    if (tls_flush(c) < 0) {
        client_close(c);
        return -1;
    }
    return n > 0 ? n : 0;
}

uv_buf_t px_tls_room(struct client *c)
{
    return uv_buf_init(PW(c->w)->tls_in, TLS_IN_SIZE);
}
