/* The proxy's internals, shared by its files (not part of its interface).
 *
 * Three objects, as HAProxy splits session from stream:
 *
 *   struct client      a client connection: socket, read buffer, keep-alive,
 *                    the one timer. Between requests it holds no buffer and
 *                    no transaction (proxy.c).
 *   struct txn       one request and its response: backend, upstream,
 *                    retries, queueing, both parsers, the rewritten heads and
 *                    the chunk framing. Taken from a per-thread pool when a
 *                    request's first byte arrives, given back when it ends
 *                    (proxy_txn.c: the state machine; proxy_msg.c: heads and
 *                    framing).
 *   struct upstream  a connection to a backend, attached to at most one
 *                    transaction, parked in a per-thread idle pool between
 *                    requests (proxy_up.c).
 *
 * Control flow: libuv callbacks are the only entry points. Each one updates
 * data and calls client_run(), which steps the connection's transaction until
 * it waits for an event. Nothing below client_run calls it again: work for
 * another connection (a freed backend slot for a queued request) is deferred
 * to the next loop iteration through the worker's queue timer. */
#ifndef SURGE_LB_PROXY_INT_H
#define SURGE_LB_PROXY_INT_H
#include <netinet/in.h>
#include <stdint.h>
#include <uv.h>

#include "base/buf.h"
#include "base/list.h"
#include "base/trace.h"
#include "http/http.h"
#include "lb/cache.h"
#include "lb/lb.h"

#define RBUF_SIZE     (16 * 1024)
#define RBUF_HEAD_MAX (HTTP_DEFAULT_MAX_HEAD + 1024)
#define OUT_HEAD_MAX  (HTTP_DEFAULT_MAX_HEAD + 4096)
/* Rebuilt trailer fields: "n:v" CRLF (4 raw bytes at least) becomes
 * "n: v" CRLF, so a section the parser accepts grows by 5/4 at most and
 * always fits: no field is ever dropped for lack of room. */
#define TRAILERS_MAX   (HTTP_DEFAULT_MAX_HEAD / 4 * 5)
#define POOL_MAX       64    /* free objects kept per worker, per kind */
#define UP_IDLE_MAX_MS 30000 /* an idle upstream connection older than this closes */
#define QUEUE_POLL_MS  5
#define LINGER_MS      2000 /* reading and dropping an abandoned body before close */
#define DISCARD_SIZE   (64 * 1024)
#define FRAME_SLOTS    64 /* chunk pieces per write */
#define TLS_IN_SIZE    (16 * 1024)

/* ---- connection -------------------------------------------------------- */

enum client_state {
    CL_IDLE,   /* no request in progress: no buffer, idle (or first-head) timer */
    CL_TXN,    /* c->txn is set: its state owns the timer and reading */
    CL_LINGER, /* the answer is out; drop what the client still sends, then close */
    CL_CLOSED, /* uv_close called; memory freed in the close callbacks */
};

struct txn;
struct px_tls;
struct upstream;

struct client {
    uv_tcp_t tcp;
    uv_timer_t timer; /* the one timer: armed by txn_set_state, client_idle, client_linger */
    struct lb_worker *w;
    struct list link; /* in w->clients */
    struct txn *txn;
    char *rbuf; /* NULL between requests */
    size_t rlen, rpos, rcap;
    uint8_t state;   /* enum client_state */
    uint8_t reading; /* uv_read_start in effect */
    uint8_t eof;     /* the client half-closed */
    uint8_t served;  /* a request was answered: the idle timer applies, not the header one */
    uint8_t closes_pending;
    uint8_t ip_len;
    uint8_t ghost; /* a background revalidation's stand-in (client_ghost_start): GHOST_* */
    uint16_t port;
    char ip[INET6_ADDRSTRLEN];
    struct px_tls *tls; /* NULL on a plain listener (proxy_tls.c) */
};

#define GHOST_PLAIN 1 /* for a client on a plain listener */
#define GHOST_TLS   2 /* for a TLS client (X-Forwarded-Proto: https) */

/* ---- chunk framing ------------------------------------------------------ */

/* One direction's chunked body, re-framed canonically: every payload piece the
 * parser hands out (a pointer into a read buffer) goes out as
 * "<hex size>\r\n" piece "\r\n", the data itself zero-copy. The texts live
 * here until the write that carries them completes. */
struct frame {
    const char *piece[FRAME_SLOTS];
    uint32_t plen[FRAME_SLOTS];
    char text[FRAME_SLOTS][16]; /* "\r\n" (after the previous piece) + size + "\r\n" */
    char tail[8];               /* "\r\n" after the last piece, then the last chunk */
    struct buf trailers;        /* "name: value\r\n" lines kept for the last chunk */
    unsigned n;
    int overflow;
    uv_buf_t iov[2 * FRAME_SLOTS + 3];
};

/* ---- transaction -------------------------------------------------------- */

enum txn_state {
    TX_HEAD,    /* reading the request head (header timer) */
    TX_QUEUED,  /* every eligible backend is full: in w->queue (queue timer) */
    TX_BACKOFF, /* an attempt failed: waiting before the retry (backoff timer) */
    TX_CONNECT, /* opening an upstream connection (connect timer) */
    TX_SEND,    /* the head went out; the body streams up (body pause and rate timer) */
    TX_WAIT,    /* the whole request went out; no response head yet (upstream timer) */
    TX_RESPOND, /* the response streams down (body pause timer) */
    TX_TUNNEL,  /* after a 101: raw bytes both ways (no timer) */
    TX_LOCAL,   /* our own answer (or a cached one) is being written (send timer) */
    TX_CWAIT,   /* another request fetches this key for the cache: polling it (poll timer) */
    TX_END,     /* over: the connection takes the next request, lingers or closes */
};

/* Facts about a transaction that are not states: each is a property of the
 * messages or of a pending write, never a substitute for a state. */
#define TF_REQ_DONE    0x01u   /* the whole request went to the upstream */
#define TF_RESP_DONE   0x02u   /* the response is parsed: finish when the write is out */
#define TF_CLOSE       0x04u   /* the connection closes after this exchange */
#define TF_WRITING     0x08u   /* a write to the client is pending */
#define TF_STARTED     0x10u   /* a response byte went to the client */
#define TF_STALE_RETRY 0x20u   /* replayed once after a stale pooled connection */
#define TF_ABANDONED   0x40u   /* an early answer came: the rest of the body is not sent */
#define TF_IN_FLIGHT   0x80u   /* counted in stats.in_flight */
#define TF_REPLAYABLE  0x100u  /* no body and safe to repeat (idempotent or keyed) */
#define TF_IDEMPOTENT  0x200u  /* no body and an idempotent method */
#define TF_HEAD_METHOD 0x400u  /* the method is HEAD */
#define TF_HEAD_DONE   0x800u  /* the request head was parsed */
#define TF_HEAD_OUT    0x1000u /* the rewritten head is on its way upstream */

struct upstream;

struct txn {
    /* Per request: cleared by txn_new (everything before `rid`). */
    struct client *c; /* NULL once the connection closed */
    struct lb_worker *w;
    enum txn_state state;
    unsigned flags;
    struct backend *b;       /* the backend slot taken by pool_pick (pool_release gives it back) */
    struct backend *exclude; /* a retry avoids it (referenced) */
    struct upstream *up;
    struct list qlink; /* in w->queue while TX_QUEUED */
    char *rbuf;        /* the response bytes read from the upstream */
    size_t rlen, rpos, rcap;
    struct frame *req_frame, *resp_frame; /* chunked bodies only */
    int retries;
    int up_writing; /* a write to the upstream is pending */
    unsigned retry_after_s;
    uint64_t backoff_ms;
    uint64_t t_head_us, t_sent_us, t_queued_us, t_end_us; /* t_end_us: 0 until txn_finish */
    /* Request body pace (ms, loop clock): it must average --body-min-rate
     * after --body-rate-grace, not counting time the backend made it wait. */
    uint64_t body_t0_ms, body_last_ms, body_bytes, body_stall_ms, up_write_t0_ms;
    /* Tracing: this hop's span (W3C traceparent, base/trace.h), the request
     * id sent upstream, the answer's status (0: none) and, with an access
     * log, "METHOD target" (cut at its size). */
    struct trace_ctx trace;
    int status;
    uint8_t rid_len;
    uint16_t name_len;
    /* The response cache (proxy_cache.c); xc 0 when it is off. */
    uint8_t xc;               /* enum px_xcache: the X-Cache value of the answer */
    uint8_t cache_fetcher;    /* this request fetches the key (others may wait for it) */
    uint8_t cache_reval;      /* our validators went up with the request */
    uint8_t cache_store;      /* the response is being captured for the store */
    uint8_t cache_swallow;    /* the upstream's answer is not forwarded (a cached one went) */
    uint8_t cache_auth;       /* the request has Authorization */
    uint8_t cache_invalidate; /* an unsafe method: a success removes the target's entries */
    uint8_t cache_bg;         /* a stand-in's background revalidation: answers go to nobody */
    uint32_t cache_target_off;
    unsigned cache_cc;
    uint64_t cache_hash, cache_wait_until_ms;
    uint64_t cache_response_ms, cache_age0_ms, cache_lifetime_ms, cache_swr_ms, cache_sie_ms;
    struct rcache_entry *cache_hold;  /* the entry being written to the client */
    struct rcache_entry *cache_stale; /* a stale entry: revalidation, stale-if-error */
    /* Not cleared by txn_new (read only up to rid_len, name_len; backend
     * is set to "" by txn_new). */
    char rid[64];
    char name[200];
    char backend[BACKEND_ADDR_MAX]; /* the last backend tried ("" none), with an access log */
    /* Kept across reuse (initialised once). */
    struct http_msg req;  /* parses c->rbuf */
    struct http_msg resp; /* parses rbuf */
    uv_write_t wreq;      /* writes to the client */
    struct buf head;      /* the rewritten request head, kept for a replay */
    struct buf out;       /* the rewritten response head or our own answer */
    struct buf cache_key, cache_head, cache_meta, cache_body; /* proxy_cache.c */
};

/* ---- upstream ---------------------------------------------------------- */

#define UF_CONNECTED    0x01u
#define UF_READING      0x02u
#define UF_REUSED       0x04u /* taken from the idle pool */
#define UF_GOT_BYTES    0x08u /* a response byte arrived for the current request */
#define UF_NOREUSE      0x10u
#define UF_CLOSING      0x20u
#define UF_WRITE_FAILED 0x40u  /* the backend stopped taking the request: read its answer */
#define UF_EOF          0x80u  /* the backend closed its side (eof_err says how) */
#define UF_TLS_HS       0x100u /* TCP is up, the TLS handshake is not done yet */

struct upstream {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    struct lb_worker *w;
    struct backend *b;     /* referenced while the connection exists */
    struct txn *t;         /* NULL while idle */
    struct list idle_link; /* in b->per_thread[w->id].idle */
    struct list wlink;     /* in the worker's idle list */
    unsigned flags;
    int eof_err; /* UV_EOF or the read error, with UF_EOF */
    uint64_t idle_since_ms;
    struct px_tls *tls; /* --backend-tls */
};

/* ---- per-thread state ---------------------------------------------------- */

struct proxy_worker {
    struct txn *txns[POOL_MAX];
    unsigned ntxns;
    struct frame *frames[POOL_MAX];
    unsigned nframes;
    char *discard;      /* reads that are dropped: lingering clients, idle upstreams */
    struct buf logline; /* the access log line being built */
    char *tls_in;       /* ciphertext just read from a TLS client (fed to its session at once) */
    /* Sums over every worker, refreshed at most once a millisecond and only
     * on the retry path. */
    uint64_t sums_at_us, inflight_sum, retrying_sum;
    /* Coalesced misses waiting for another request's fetch (TX_CWAIT, by
     * qlink), woken by cache_wake when a fetch they wait for ends, on any
     * worker (px_cache_wake). wake_mu guards wake_open: no wake-up is sent
     * to a worker whose handle is closing. */
    struct list cwait;
    uv_async_t cache_wake;
    uv_mutex_t wake_mu;
    int wake_open;
};

static inline struct proxy_worker *PW(struct lb_worker *w)
{
    return w->proxy;
}

/* ---- proxy.c: connections -------------------------------------------------- */

/* A 16 KiB read buffer from the worker's cache (or malloc); px_rbuf_put gives
 * one back (NULL is fine; a grown buffer, cap != RBUF_SIZE, is freed). */
char *px_rbuf_get(struct lb_worker *w);
void px_rbuf_put(struct lb_worker *w, char *p, size_t cap);
/* Room to read into for a libuv alloc callback: a cached buffer on demand,
 * grown once to RBUF_HEAD_MAX when full and `may_grow` (a head, or a held
 * trailer line, fills it: see px_may_grow; the old buffer is freed, so no
 * pending write may point into it). *out may be empty (len 0) when the
 * buffer is full: the caller stops reading first. */
void px_read_room(struct lb_worker *w, char **rbuf, size_t *rlen, size_t *rpos, size_t *rcap,
                  int may_grow, uv_buf_t *out);
/* May a full read buffer parsed by m grow (and move)? While a head is parsed
 * (in_head), or while the parser holds an unfinished trailer line
 * (m->hold_off) and no write from the buffer is pending (`writing`). Below
 * hold_off the buffer is never reset, moved or reused: the parser reads the
 * line from its first byte when it ends. */
static inline int px_may_grow(const struct http_msg *m, int in_head, int writing)
{
    return in_head || (m->hold_off != HTTP_NO_HOLD && !writing);
}
/* Does m hold an unfinished trailer line that a full buffer of cap bytes
 * cannot complete (the caller answers 431 or cuts the response)? */
static inline int px_trailer_stuck(const struct http_msg *m, size_t len, size_t cap)
{
    return m->hold_off != HTTP_NO_HOLD && len == cap && cap >= RBUF_HEAD_MAX;
}
/* Start or stop reading the client as its state wants. Any state. */
void client_reading_update(struct client *c);
/* Close at once (client gone, fatal error): the transaction is detached (its
 * backend, upstream and queue slot let go) and freed with the connection in
 * the close callbacks. Safe to call twice. */
void client_close(struct client *c);
/* A stand-in client without a socket that sends c's current request (the
 * head at c->rbuf[0, c->rpos)) through the proxy once more, on its own, on
 * the next loop iteration: a background revalidation (proxy_cache.c,
 * px_cache_ghost) that the client's connection does not wait for. It is
 * never read or written and closes when its transaction ends. 0, or -1 when
 * it cannot (draining, a head larger than a read buffer). */
int client_ghost_start(struct client *c);
/* The only driver: step the connection's transactions until one waits for
 * an event, then idle, linger or close. Called by libuv callbacks only (never
 * from below itself). */
void client_run(struct client *c);
/* Arm the connection's one timer (txn_set_state and the re-arms of a state's
 * own deadline). */
void client_timer(struct client *c, uint64_t ms);
/* Write to the client with t->wreq; the data must live until the write
 * completes (t's buffers do). 0 written, 1 pending (TF_WRITING set), <0 the
 * client is gone (the connection was closed: check t->c). */
int client_write(struct txn *t, uv_buf_t *bufs, unsigned n);
/* One log line with the client's address, b's (may be NULL) and the action;
 * nothing is formatted when the level is off. */
void client_log(const struct client *c, const struct backend *b, int level, const char *action,
                const char *msg);

/* ---- proxy_tls.c: TLS client connections ------------------------------------ */

/* A TLS session on a libuv stream with its write queue (client or upstream
 * connection). Ciphertext the socket does not take at once waits in wbuf
 * (being written) and pend (made meanwhile). */
struct px_tls {
    struct tls_sess s;
    uv_stream_t *stream;
    void *owner;
    /* The queue drained after px_tls_writev returned 1 (status 0; `waiting`
     * tells), or a write failed (status < 0, also UV_ECANCELED at close). */
    void (*done)(struct px_tls *x, int status);
    uv_write_t wreq;
    struct buf wbuf, pend;
    uint8_t writing; /* a uv_write of wbuf is pending */
    uint8_t waiting; /* the owner waits for the queue to drain */
};
/* Move the session's output to the socket (at once, or by a write of its
 * own). 0 or a libuv error. */
int px_tls_flush(struct px_tls *x);
/* Encrypt and queue: 0 all went to the socket, 1 pending (x->done comes;
 * x->waiting set), <0 failed. */
int px_tls_writev(struct px_tls *x, uv_buf_t *bufs, unsigned n);
void px_tls_release(struct px_tls *x);

/* Make c a TLS connection on srv (which outlives it). 0 or -1. */
int px_tls_start(struct client *c, struct tls_server *srv);
/* Free c's TLS state (the close callbacks). NULL c->tls is fine. */
void px_tls_free(struct client *c);
/* Where a TLS client's ciphertext is read to (the worker's scratch). */
uv_buf_t px_tls_room(struct client *c);
/* nread bytes of ciphertext arrived in px_tls_room: handshake, then decrypt
 * into c->rbuf (c->rlen advanced) or drop (lingering, abandoned body).
 * Returns the plaintext bytes added, 0, or a libuv error (UV_EOF on
 * close_notify, UV_EPROTO on a failed handshake or a bad record) for the
 * caller's end-of-input path. nread <= 0 comes back as it is. */
ssize_t px_tls_on_read(struct client *c, ssize_t nread, const uv_buf_t *buf);
/* Decrypt what the session already holds while c is reading (client_run:
 * the read buffer has room again). Bytes added (c->rlen advanced), 0, or
 * -1 when the connection was closed. */
ssize_t px_tls_pull(struct client *c);
/* Before a close or half-close: send close_notify when the socket takes it
 * now (a client may otherwise take the end for a truncation and drop its
 * session). NULL c->tls is fine. */
void px_tls_close_notify(struct client *c);
/* client_write on a TLS connection (same contract). */
int px_tls_write(struct txn *t, uv_buf_t *bufs, unsigned n);
/* TLS to backends (--backend-tls): make up a TLS connection to host (the
 * backend's address without the port: checked against the certificate with
 * --backend-ca, and sent as SNI when a name). 0 or -1. */
int px_tls_upstream(struct upstream *up, void *client_ctx, const char *host);

/* ---- proxy_cache.c: the response cache ------------------------------------------ */

enum px_xcache { XC_NONE, XC_BYPASS, XC_MISS, XC_HIT, XC_STALE, XC_REVALIDATED };
/* "HIT"... for an enum px_xcache ("BYPASS" for XC_NONE). */
const char *px_cache_status_name(int xc);
/* The request head is parsed and rewritten (cache on or off). 1 when t was
 * answered from the cache (TX_LOCAL) or waits for another fetch of its key
 * (TX_CWAIT); 0 to go to a backend (t->head may carry our validators). */
int px_cache_request(struct txn *t);
/* TX_CWAIT's timer: answer from the store, wait on, or go upstream. */
void px_cache_wait_tick(struct txn *t);
/* A final response head arrived (t->resp, t->rbuf; TF_CLOSE decided). 1
 * when a cached answer was written instead (a 304 to our revalidation, or
 * stale-if-error on a 5xx): the upstream's answer is read and dropped
 * (t->cache_swallow). 0: forward it (and maybe capture it for the store). */
int px_cache_on_response(struct txn *t);
/* Response body payload bytes on their way to the client (captured when
 * the response is being stored; past the largest object, capture stops). */
void px_cache_body(struct txn *t, const char *p, size_t n);
/* The whole response went through: store it, end the fetch, invalidate
 * after an unsafe method. */
void px_cache_response_done(struct txn *t);
/* Our own 5xx is about to go out: serve the stale entry instead when
 * stale-if-error allows. 1 when served (TX_LOCAL). */
int px_cache_stale_on_error(struct txn *t);
/* A background revalidation (cache_bg) failed: the stale entry stays and
 * the next request within the window tries again. */
void px_cache_bg_failed(struct txn *t);
/* The request of a stand-in client (client_ghost_start): revalidate the key
 * in the background when nobody fetches it. 1 when t ended at once
 * (TX_LOCAL, nothing written), 0 to go to the origin. */
int px_cache_ghost(struct txn *t);
/* uv_async callback (PW(w)->cache_wake): a fetch that waiters of this
 * worker wait for ended; each of them looks again. */
void px_cache_wake(uv_async_t *a);
/* The transaction ends (txn_free): counters, references, an unfinished
 * fetch given up. */
void px_cache_txn_end(struct txn *t);

/* ---- proxy_txn.c: the transaction state machine -------------------------- */

/* Results of stepping a transaction. */
enum { STEP_WAIT, STEP_END, STEP_GONE };

/* A transaction for c from the worker's pool, in TX_HEAD (the caller enters
 * it with txn_set_state). Never fails (allocation failure aborts). */
struct txn *txn_new(struct client *c);
/* Give t back to the pool. Precondition: TX_END, no backend, no upstream,
 * no pending write. */
void txn_free(struct lb_worker *w, struct txn *t);
/* The one transition function (see proxy_txn.c). In: any state but TX_END.
 * With t->c NULL (detached) it only does the accounting. */
void txn_set_state(struct txn *t, enum txn_state to);
/* Step t as far as the bytes at hand allow: STEP_WAIT (waiting for an
 * event), STEP_END (t is TX_END: the connection moves on), STEP_GONE (the
 * connection closed). */
int txn_step(struct txn *t);
/* TX_SEND: measure the body's pace from now (after a 100 Continue). */
void txn_body_restart(struct txn *t);
/* The connection's timer fired while t owns it: the deadline of t's state
 * passed. Out: a failure state, a retry, or the connection closed. */
void txn_timeout(struct txn *t);
/* Answer with our own error (status, JSON {"error": reason}; reason is a
 * static string without quotes). Out: TX_LOCAL; keep-alive only for a 429 or
 * 5xx to a whole request. */
void txn_reject(struct txn *t, int status, const char *reason);
/* The connection is closing: let go of the upstream, the backend and the
 * queue slot. Out: TX_END, t->c NULL. */
void txn_detach(struct txn *t);
/* The upstream failed before or while answering (closed, reset, broken
 * response): counted against the backend, then a replay, a retry, a 502, or
 * (a response byte already went out) the client connection cut. */
void txn_up_failed(struct txn *t, const char *reason);
/* A write to the upstream failed: stop sending, let its answer decide
 * (RFC 9112 9.5). Not counted against the backend. */
void txn_up_write_failed(struct txn *t);
/* How an attempt failed, for the retry decision. */
enum {
    RETRY_NO,
    RETRY_LOST,    /* the connection failed: refused, reset, closed before answering */
    RETRY_ANSWERED /* the backend answered 502/503/504 */
};
/* Retry elsewhere after a backoff when allowed, else answer status. In:
 * TX_CONNECT, TX_SEND, TX_WAIT (no response byte sent). Out: TX_BACKOFF or
 * TX_LOCAL. */
void txn_retry_or_fail(struct txn *t, int kind, int status, const char *reason);
/* May another retry start now (retries under 20% of the requests in flight,
 * floor 3)? Sums every worker's counters at most once a millisecond. */
int txn_retry_budget(struct lb_worker *w);
/* Passive health: b failed a request (lost: the connection failed, else it
 * answered 5xx or too slowly; an overload answer, see msg_response_overload,
 * is not a failure and never comes here). */
void txn_backend_failed(struct lb_worker *w, struct backend *b, int lost);
/* Send t to b (its slot taken by pool_pick): a pooled upstream connection
 * (TX_SEND) or a new one (TX_CONNECT); a connect that cannot start retries
 * or fails like a refused one. */
void txn_attach(struct txn *t, struct backend *b);
/* Go to a backend with the parsed, rewritten request (retries reset). Out:
 * TX_QUEUED, TX_CONNECT, TX_SEND, TX_BACKOFF or TX_LOCAL. */
void txn_go_upstream(struct txn *t);
/* Count a response by status class (0 = aborted) in the worker's stats. */
void txn_count_response(struct txn *t, int status);
/* Add d to a per-worker counter (written by its own thread only, read by
 * others with relaxed atomics). */
void stat_add(uint64_t *v, int64_t d);

/* ---- proxy_up.c: upstream connections ------------------------------------- */

/* Take an idle pooled connection to b of this worker (most recent first), or
 * NULL. The caller attaches it (up->t, t->up). */
struct upstream *up_take_idle(struct lb_worker *w, struct backend *b);
/* Open a new connection to b for t (attached on success, b referenced). 0,
 * or <0 when the connect could not start (nothing attached then). */
int up_open(struct txn *t, struct backend *b);
/* Close (detaching its transaction, cancelling a pending write); the memory
 * goes in the close callback. Safe to call twice. */
void up_close(struct upstream *up);
/* The exchange is over: detach, then back to the idle pool when reuse, else
 * close. */
void up_release(struct txn *t, int reuse);
/* Start or stop reading as the connection's state wants (stop while the
 * transaction's response buffer is full). */
void up_read_update(struct upstream *up);
/* Write request bytes (data live until the write completes). 0 done or
 * pending (t->up_writing), <0 failed now: the caller calls
 * txn_up_write_failed. After a failed write, writes are dropped (0). */
int up_write(struct txn *t, uv_buf_t *bufs, unsigned n);
/* Parse and forward what the upstream sent, until its bytes are used or a
 * client write is pending. 1 on progress; the caller checks t->c (NULL: the
 * connection closed) and t->state. A complete response sets TF_RESP_DONE. */
int up_pump_response(struct txn *t);
/* --backend-tls: decrypt what the session already holds while the
 * connection reads (client_run: the response buffer has room again). >0 on
 * progress. */
ssize_t up_tls_pull(struct upstream *up);
/* Close idle connections older than UP_IDLE_MAX_MS or to a draining
 * backend (all of them while stopping). */
void up_sweep(struct lb_worker *w);
/* Close every idle connection of the worker (exit). */
void up_close_all(struct lb_worker *w);

/* ---- proxy_msg.c: heads and framing -------------------------------------- */

/* Rewrite the parsed request head (c->rbuf, t->req) into t->head: hop-by-hop
 * fields dropped, X-Forwarded-For/-Proto and X-Request-Id added. 0, or
 * -ENOBUFS past OUT_HEAD_MAX (the caller answers 431). */
int msg_build_request_head(struct txn *t);
/* Rewrite the response head (t->rbuf, t->resp) into t->out, with
 * "Connection: close" when TF_CLOSE. 0 or -ENOBUFS. */
int msg_build_response_head(struct txn *t);
/* The key ip_hash and consistent_hash hash for this request (--hash-key),
 * the client address when the request has none. Reads the head's bytes. */
uint64_t msg_request_key(struct txn *t);
/* Is the parsed response head (t->rbuf, t->resp) an overload answer: a 429,
 * or a 503 with Retry-After (the backend sheds load on purpose and says when
 * to come back)? Such an answer is counted apart and never as a failure. */
int msg_response_overload(const struct txn *t);
/* Does the request carry an Idempotency-Key header? */
int msg_has_idempotency_key(const struct txn *t);
/* Feed a chunked body from buf[*pos, len) into f (f->n pieces so far) in
 * slices that cannot bring more than the slots left, until f is full, the
 * bytes are used or the message ends; trailer fields are kept in f (see
 * frame_on_trailer). *pos advances past what was consumed; an unfinished
 * trailer line is consumed too, but m->hold_off then marks its first byte,
 * which the caller keeps at its offset (px_may_grow). Returns the parser's
 * event (HTTP_EV_ERROR with m->err_*). */
int frame_feed(struct frame *f, struct http_msg *m, const char *buf, size_t *pos, size_t len);
/* The iovecs for f's pieces (and the last chunk with the kept trailers when
 * `end`), after `first` when not NULL; *n receives the count. f->n is reset;
 * the texts stay valid until the next frame_feed. */
uv_buf_t *frame_iov(struct frame *f, int end, const uv_buf_t *first, unsigned *n);
/* Keep one trailer field for the last chunk; fields that frame, route or
 * manage the connection are dropped (RFC 9110 6.5.1). The parser has
 * checked the field with the head's rules. arg: the frame. */
void frame_on_trailer(void *arg, const char *name, size_t nlen, const char *value, size_t vlen);
/* A frame from the worker's pool (empty); frame_put gives it back (NULL is
 * fine). */
struct frame *frame_get(struct lb_worker *w);
void frame_put(struct lb_worker *w, struct frame *f);
/* What the proxy needs to know of a request's method. */
#define MSG_M_CONNECT    0x1u /* answered 501: the balancer does not tunnel */
#define MSG_M_HEAD       0x2u /* the response has no body whatever it says */
#define MSG_M_IDEMPOTENT 0x4u /* RFC 9110 9.2.2: may be repeated after a failure */
unsigned msg_method_class(const struct http_msg *m);
/* The request method's name, as forwarded (buf: the bytes m was parsed from). */
const char *msg_method_name(const struct http_msg *m, const char *buf, size_t *len);

#endif
