/* A buffered TCP connection on a libuv loop: the connection layer that
 * servers and clients build on (admin API, health checks; the app and the
 * load generator next).
 *
 * What it owns: the socket and one timer; an input buffer and an output
 * buffer, each with a hard cap set at init; reading with backpressure (the
 * owner pauses and resumes); writes that go straight to the socket when it
 * can take them (uv_try_write) and are copied into the output buffer only
 * when it cannot; one timeout; one close path that runs the owner's
 * callbacks once and frees nothing the owner did not hand over.
 *
 * The proxy (src/lb/proxy.c) does not use it: it forwards between two
 * sockets without copying, which needs its own two-sided buffer rules (its
 * TLS is in src/lb/proxy_tls.c, on the same net/tls.c engine).
 *
 * Threading: a connection lives on one loop; call everything from that
 * loop's thread. Lifetime: the owner allocates struct conn (usually embedded
 * in its own struct), and gets it back in ops->on_free once libuv has let go
 * of every handle. */
#ifndef SURGE_NET_CONN_H
#define SURGE_NET_CONN_H
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "base/buf.h"
#include "base/log.h"

struct conn;
struct conn_tls;

struct conn_ops {
    /* New bytes are at the end of c->in. Consume what was used with
     * buf_consume(&c->in, n). When c->in reaches its cap the layer stops
     * reading until bytes are consumed. */
    void (*on_data)(struct conn *c);
    /* Client connections: the connect finished (status 0 or a libuv error). */
    void (*on_connect)(struct conn *c, int status);
    /* The output buffer emptied (optional). */
    void (*on_drain)(struct conn *c);
    /* The timer set with conn_timeout fired (optional; default: close). */
    void (*on_timeout)(struct conn *c);
    /* The peer closed (UV_EOF), an error happened (negative libuv error), or
     * 0 for a close asked for with conn_close. Called once. Optional. */
    void (*on_close)(struct conn *c, int status);
    /* Every handle is closed: the owner frees c now. Required. */
    void (*on_free)(struct conn *c);
};

#define CONN_F_CLOSING     0x01u
#define CONN_F_READING     0x02u
#define CONN_F_PAUSED      0x04u /* the owner paused reading */
#define CONN_F_CLOSE_AFTER 0x08u /* close once the output buffer is written */
#define CONN_F_WRITING     0x10u

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t creq;
    uv_write_t wreq;
    struct buf in;     /* unread input, capped */
    struct buf out;    /* output the socket has not taken yet, capped */
    struct buf queue_; /* private: output queued while a write of out is pending */
    const struct conn_ops *ops;
    void *data;         /* the owner's */
    char peer[64];      /* "ip:port" */
    char peer_ip[48];   /* the peer's address alone (accepted connections) */
    struct log_ctx log; /* client = peer; the owner sets action/upstream */
    unsigned flags;
    int handles;          /* still open, for on_free */
    struct conn_tls *tls; /* NULL: plain TCP (conn_tls_client) */
};

/* Accept one connection from server into c. 0, or a libuv error (c is then
 * already closing and on_free will run). */
int conn_accept(struct conn *c, uv_stream_t *server, const struct conn_ops *ops, size_t in_max,
                size_t out_max);
/* Start connecting c to addr on loop; ops->on_connect reports the result.
 * 0, or a libuv error (c is then closing and on_free will run). */
int conn_connect(struct conn *c, uv_loop_t *loop, const struct sockaddr *addr,
                 const struct conn_ops *ops, size_t in_max, size_t out_max);
/* Queue len bytes. Written at once when possible, else copied into c->out.
 * 0; -ENOBUFS when c->out would pass its cap (nothing queued); -EPIPE when
 * closing. */
int conn_write(struct conn *c, const void *data, size_t len);
/* Close once everything queued is written. */
void conn_close_after_write(struct conn *c);
/* Close now (idempotent): on_close(c, 0), then on_free. */
void conn_close(struct conn *c);
/* Arm the timer (ms > 0) or stop it (0). */
void conn_timeout(struct conn *c, uint64_t ms);
/* Stop or resume reading (backpressure). */
void conn_pause(struct conn *c);
void conn_resume(struct conn *c);

/* TLS (net/tls.h), client side: call right after a successful
 * conn_connect. The handshake runs once TCP connects; ops->on_connect comes
 * when it is done (status 0), or the connection closes with UV_EPROTO.
 * Writes are encrypted, reads decrypted, transparently. resume: an
 * SSL_SESSION from conn_tls_session to offer, or NULL. 0, or -1 (c is then
 * closing). Limit: decrypted bytes that do not fit c->in wait in the
 * session for the connection's next read. */
int conn_tls_client(struct conn *c, void *client_ctx, const char *sni, void *resume);
/* The established session (a new reference: tls_session_free), or NULL. */
void *conn_tls_session(struct conn *c);
/* Did the handshake resume a session? */
int conn_tls_resumed(const struct conn *c);

#endif
