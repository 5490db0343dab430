#include "net/conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "net/net.h"
#include "net/tls.h"

#define READ_CHUNK (16 * 1024)

/* TLS (client side, conn_tls_client): ciphertext is read into `in` here and
 * fed to the session at once; plaintext goes to c->in as a plain read's
 * bytes would. */
struct conn_tls {
    struct tls_sess s;
    char in[READ_CHUNK];
};

static int raw_write(struct conn *c, const void *data, size_t len);

/* c->out is what the pending uv_write points into and must not move while
 * CONN_F_WRITING; bytes queued meanwhile wait in c->queue_ and are swapped
 * in when the write completes. */
static struct buf *c_queue(struct conn *c)
{
    return &c->queue_;
}

static void on_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->handles)
        return;
    buf_free(&c->in);
    buf_free(&c->out);
    buf_free(&c->queue_);
    if (c->tls) {
        tls_sess_free(&c->tls->s);
        free(c->tls);
        c->tls = NULL;
    }
    c->ops->on_free(c);
}

static void close_with(struct conn *c, int status)
{
    if (c->flags & CONN_F_CLOSING)
        return;
    c->flags |= CONN_F_CLOSING;
    if (c->flags & CONN_F_READING)
        uv_read_stop((uv_stream_t *)&c->tcp);
    c->flags &= ~CONN_F_READING;
    uv_timer_stop(&c->timer);
    if (c->ops->on_close)
        c->ops->on_close(c, status);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

void conn_close(struct conn *c)
{
    close_with(c, 0);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    struct conn *c = h->data;
    if (c->tls) {
        out->base = c->tls->in;
        out->len = sizeof c->tls->in;
        return;
    }
    size_t room = c->in.max_size - c->in.len;
    if (room > READ_CHUNK)
        room = READ_CHUNK;
    if (room == 0 || buf_reserve(&c->in, room) < 0) {
        out->base = NULL;
        out->len = 0;
        return;
    }
    out->base = c->in.data + c->in.len;
    out->len = room;
}

static void update_reading(struct conn *c);

/* Send the session's pending ciphertext. 0 or -EPIPE (closing). */
static int tls_flush(struct conn *c)
{
    char out[READ_CHUNK];
    size_t n;
    while ((n = tls_sess_out_take(&c->tls->s, out, sizeof out)) > 0)
        if (raw_write(c, out, n) < 0)
            return -EPIPE;
    return 0;
}

/* Ciphertext arrived: handshake, then plaintext into c->in for on_data. */
static void tls_on_read(struct conn *c, const char *p, size_t n)
{
    struct tls_sess *s = &c->tls->s;
    if (tls_sess_feed(s, p, n) < 0) {
        close_with(c, UV_ENOMEM);
        return;
    }
    if (!s->established) {
        int hs = tls_sess_handshake(s);
        if (tls_flush(c) < 0)
            return;
        if (hs < 0) {
            close_with(c, UV_EPROTO);
            return;
        }
        if (hs == 0)
            return;
        c->ops->on_connect(c, 0);
        if (c->flags & CONN_F_CLOSING)
            return;
    }
    for (;;) {
        size_t room = c->in.max_size - c->in.len;
        if (room > READ_CHUNK)
            room = READ_CHUNK;
        if (room == 0 || buf_reserve(&c->in, room) < 0)
            break; /* the rest waits in the session for the next read */
        ssize_t got = tls_sess_read(s, c->in.data + c->in.len, room);
        if (got == 0)
            break;
        if (got < 0) {
            close_with(c, got == TLS_EOF ? UV_EOF : UV_EPROTO);
            return;
        }
        c->in.len += (size_t)got;
        c->in.data[c->in.len] = '\0';
        c->ops->on_data(c);
        if (c->flags & CONN_F_CLOSING)
            return;
    }
    if (tls_flush(c) == 0)
        update_reading(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (nread > 0 && c->tls) {
        tls_on_read(c, buf->base, (size_t)nread);
        return;
    }
    if (nread > 0) {
        c->in.len += (size_t)nread;
        c->in.data[c->in.len] = '\0';
        c->ops->on_data(c);
        update_reading(c);
        return;
    }
    if (nread == 0 || nread == UV_ENOBUFS) {
        update_reading(c);
        return;
    }
    close_with(c, (int)nread);
}

/* Read while the owner wants to and the input buffer has room. */
static void update_reading(struct conn *c)
{
    int want = !(c->flags & (CONN_F_CLOSING | CONN_F_PAUSED)) && c->in.len < c->in.max_size;
    if (want && !(c->flags & CONN_F_READING)) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
            c->flags |= CONN_F_READING;
    } else if (!want && (c->flags & CONN_F_READING)) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->flags &= ~CONN_F_READING;
    }
}

void conn_pause(struct conn *c)
{
    c->flags |= CONN_F_PAUSED;
    update_reading(c);
}

void conn_resume(struct conn *c)
{
    c->flags &= ~CONN_F_PAUSED;
    update_reading(c);
}

static void on_timer(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->ops->on_timeout)
        c->ops->on_timeout(c);
    else
        close_with(c, UV_ETIMEDOUT);
}

void conn_timeout(struct conn *c, uint64_t ms)
{
    if (c->flags & CONN_F_CLOSING)
        return;
    if (ms)
        uv_timer_start(&c->timer, on_timer, ms, 0);
    else
        uv_timer_stop(&c->timer);
}

static void start_write(struct conn *c);

static void on_written(uv_write_t *req, int status)
{
    struct conn *c = req->handle->data;
    c->flags &= ~CONN_F_WRITING;
    if (c->flags & CONN_F_CLOSING)
        return;
    if (status < 0) {
        close_with(c, status);
        return;
    }
    /* What was queued meanwhile becomes the next write. */
    struct buf *q = c_queue(c);
    struct buf done = c->out;
    c->out = *q;
    buf_reset(&done);
    *q = done;
    if (c->out.len) {
        start_write(c);
        return;
    }
    if (c->ops->on_drain)
        c->ops->on_drain(c);
    if ((c->flags & CONN_F_CLOSE_AFTER) && !(c->flags & CONN_F_WRITING) && !c->out.len)
        close_with(c, 0);
}

static void start_write(struct conn *c)
{
    uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
    int rc = net_write((uv_stream_t *)&c->tcp, &c->wreq, &b, 1, on_written);
    if (rc < 0) {
        close_with(c, rc);
        return;
    }
    if (rc == 1) {
        /* net_write moved b past what went out; keep the rest in place. */
        c->flags |= CONN_F_WRITING;
        return;
    }
    buf_reset(&c->out);
    if (c->ops->on_drain)
        c->ops->on_drain(c);
    if ((c->flags & CONN_F_CLOSE_AFTER) && !(c->flags & CONN_F_CLOSING))
        close_with(c, 0);
}

int conn_write(struct conn *c, const void *data, size_t len)
{
    if (!c->tls)
        return raw_write(c, data, len);
    if (c->flags & CONN_F_CLOSING)
        return -EPIPE;
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    if (tls_sess_writev(&c->tls->s, &b, 1) < 0) {
        close_with(c, UV_EPROTO);
        return -EPIPE;
    }
    return tls_flush(c);
}

static int raw_write(struct conn *c, const void *data, size_t len)
{
    if (c->flags & CONN_F_CLOSING)
        return -EPIPE;
    struct buf *q = c_queue(c);
    if (c->out.len + q->len + len > c->out.max_size)
        return -ENOBUFS;
    if (c->flags & CONN_F_WRITING)
        return buf_append(q, data, len);
    if (c->out.len == 0) {
        /* The common case: straight to the socket, no copy. */
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
        int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (n == (int)len)
            return 0;
        if (n < 0 && n != UV_EAGAIN) {
            close_with(c, n);
            return -EPIPE;
        }
        if (n > 0) {
            data = (const char *)data + n;
            len -= (size_t)n;
        }
    }
    int rc = buf_append(&c->out, data, len);
    if (rc == 0)
        start_write(c);
    return rc;
}

void conn_close_after_write(struct conn *c)
{
    c->flags |= CONN_F_CLOSE_AFTER;
    if (!(c->flags & CONN_F_WRITING) && !c->out.len)
        close_with(c, 0);
}

static int conn_init(struct conn *c, uv_loop_t *loop, const struct conn_ops *ops, size_t in_max,
                     size_t out_max)
{
    struct buf *q = c_queue(c);
    c->ops = ops;
    c->tls = NULL;
    c->flags = 0;
    c->handles = 2;
    c->peer[0] = '\0';
    c->log.client = c->peer;
    buf_init(&c->in, in_max);
    buf_init(&c->out, out_max);
    buf_init(q, out_max);
    uv_tcp_init(loop, &c->tcp);
    uv_timer_init(loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    return 0;
}

int conn_accept(struct conn *c, uv_stream_t *server, const struct conn_ops *ops, size_t in_max,
                size_t out_max)
{
    conn_init(c, server->loop, ops, in_max, out_max);
    int rc = uv_accept(server, (uv_stream_t *)&c->tcp);
    if (rc < 0) {
        close_with(c, rc);
        return rc;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        net_addr_format((struct sockaddr *)&ss, c->peer, sizeof c->peer);
        net_ip_format((struct sockaddr *)&ss, c->peer_ip, sizeof c->peer_ip);
    }
    update_reading(c);
    return 0;
}

static void on_connected(uv_connect_t *req, int status)
{
    struct conn *c = req->handle->data;
    if (c->flags & CONN_F_CLOSING)
        return;
    if (status == 0) {
        uv_tcp_nodelay(&c->tcp, 1);
        update_reading(c);
        if (c->tls) {
            /* The ClientHello; on_connect once the handshake is done. */
            if (tls_sess_handshake(&c->tls->s) < 0) {
                close_with(c, UV_EPROTO);
                return;
            }
            tls_flush(c);
            return;
        }
    }
    c->ops->on_connect(c, status);
}

int conn_connect(struct conn *c, uv_loop_t *loop, const struct sockaddr *addr,
                 const struct conn_ops *ops, size_t in_max, size_t out_max)
{
    conn_init(c, loop, ops, in_max, out_max);
    net_addr_format(addr, c->peer, sizeof c->peer);
    int rc = uv_tcp_connect(&c->creq, &c->tcp, addr, on_connected);
    if (rc < 0)
        close_with(c, rc);
    return rc;
}

int conn_tls_client(struct conn *c, void *client_ctx, const char *sni, void *resume)
{
    struct conn_tls *t = xmalloc(sizeof *t);
    if (tls_sess_client(&t->s, client_ctx, sni, resume) < 0) {
        free(t);
        close_with(c, UV_ENOMEM);
        return -1;
    }
    c->tls = t;
    return 0;
}

void *conn_tls_session(struct conn *c)
{
    return c->tls && c->tls->s.established ? tls_sess_get_session(&c->tls->s) : NULL;
}

int conn_tls_resumed(const struct conn *c)
{
    return c->tls && c->tls->s.established && tls_sess_resumed(&c->tls->s);
}
