/* The load engine: -t threads, one libuv loop each, keep-alive connections.
 *
 * Closed model: every connection sends its next request when the last answer
 * arrived. Open model: a per-thread timer walks the schedule (bench_sched_at)
 * and hands each due request to an idle connection, or queues it and opens
 * another connection (up to the cap); its latency runs from the intended
 * time, so queueing counts. Each thread owns its stats; bench_run merges
 * them after joining. The request bytes are built once and shared read-only.
 *
 * Scenarios (--scenario) are open-model runs whose requests differ: each
 * sent request picks a mix entry by weight and the thread's next virtual
 * user, and is rendered into the connection's own buffers (they keep their
 * memory, so the hot path does not allocate). Virtual users are split
 * between threads (VU v belongs to thread (v - 1) % threads), so their
 * session cookies need no locking. A session request of a VU without a
 * cookie first sends the [login] request on the same connection, keeps the
 * cookie from its Set-Cookie, then sends the request; a 401 on a session
 * request forgets the cookie, so the VU logs in again next time. The plain
 * path stays as it was: one shared request, one branch on sh->sc. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include <errno.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/timerfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <uv.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "bench/bench.h"
#include "http/http.h"
#include "net/conn.h"
#include "net/net.h"
#include "net/tls.h"

#define IN_MAX       (256 * 1024)
#define TICK_MS      20
#define RECONNECT_MS 100 /* closed model: pause before replacing a failed connection */
#define QUEUE_MAX    (1u << 20)
#define ERR_NONE     (-1)
#define SPIN_NS      50000 /* open model: busy-wait at most this long before a send */

struct bthread;

struct bconn {
    struct conn c;
    struct bthread *t;
    struct http_msg msg;
    size_t pos;         /* parse offset in c.in (head bytes are kept until the head ends) */
    uint64_t origin_ns; /* latency origin: the send (closed) or the intended time (open) */
    uint64_t sent_ns;   /* the actual send, for --timeout */
    uint64_t opened_ns; /* connect start, for the connect timeout */
    int busy, connected, connect_done, in_head;
    int session_saved;         /* --tls-resume: this connection's session was kept */
    int close_err;             /* enum bench_err to count on close, or ERR_NONE */
    struct bconn *prev, *next; /* every live connection of the thread */
    struct bconn *idle_next;
    int idle;
    /* Scenarios only. */
    struct buf req, body; /* this connection's rendered request, capped */
    int entry;            /* mix entry in flight (sc->nreq = the login flow), -1 none */
    int pending;          /* entry to send once the login answered, -1 none */
    int sent_session;     /* the request in flight carried the VU's cookie */
    unsigned vu;          /* index of the VU in the thread's table */
};

/* A virtual user: its session cookie value (allocated at its first login). */
enum { VU_OUT = 0, VU_LOGGING_IN, VU_IN };

struct bvu {
    char *cookie;
    uint16_t cookie_len;
    uint8_t state;
};

struct bshared {
    const struct bench_config *cfg;
    const struct bench_scenario *sc; /* NULL: the plain single request */
    const char *authority;
    void *tls_ctx;       /* https: the client context (shared by the threads) */
    const char *tls_sni; /* the URL's host unless it is an address */
    size_t req_max;      /* scenario: cap of a connection's request buffer */
    uint64_t *seq;       /* {{seq}}: last number handed out (atomic, shared by the threads) */
    struct sockaddr_storage addr;
    const char *req;
    size_t req_len;
    int is_head;
    uint64_t t0, t_end;
    unsigned nthreads;
    /* Busy-wait allowed (the fallback without a timerfd): only when every
     * generator thread has a CPU of its own; threads sharing a CPU would
     * spin while the other one's answers wait. */
    int spin;
};

struct bthread {
    uv_loop_t loop;
    uv_timer_t tick, sched, end;
    uv_poll_t tpoll; /* the timerfd: sends at their intended times */
    int tfd;         /* timerfd, or -1: millisecond timer (+ spin) instead */
    uv_idle_t spin;  /* the last sub-millisecond before a due time */
    uv_thread_t tid;
    const struct bshared *sh;
    unsigned k;
    int target_conns, max_conns;
    int live, established_now, connecting;
    int reconnect_due;
    uint64_t reconnect_at;
    int stopping; /* the run's time is up: no new requests (draining) */
    int finished; /* every handle is closing */
    uint64_t timeout_ns;
    struct bconn *all, *idle;
    void *tls_session; /* --tls-resume: the last session a connection of this thread got */
    uint64_t *queue;   /* ring of intended times waiting for a connection */
    size_t qcap, qhead, qlen;
    uint64_t next_i;
    uint64_t ended_ns;
    struct bench_stats stats;
    /* Scenarios only. */
    struct bvu *vus; /* this thread's VUs: number k + 1 + i * nthreads */
    unsigned nvus, vu_next;
    uint64_t rng;
};

static void open_conn(struct bthread *t);
static void conn_next(struct bconn *bc);
static void drain_check(struct bthread *t);
static int queue_push(struct bthread *t, uint64_t at);

static int open_model(const struct bthread *t)
{
    return t->sh->cfg->rate_rps > 0;
}

/* Second of the run `now` falls in, for the time series. */
static size_t sec_of(const struct bthread *t, uint64_t now)
{
    return now > t->sh->t0 ? (size_t)((now - t->sh->t0) / 1000000000ULL) : 0;
}

static void fail_conn(struct bconn *bc, enum bench_err kind)
{
    if (bc->close_err == ERR_NONE)
        bc->close_err = (int)kind;
    conn_close(&bc->c);
}

static void send_scenario(struct bconn *bc, uint64_t origin_ns, int entry);

static void send_request(struct bconn *bc, uint64_t origin_ns)
{
    struct bthread *t = bc->t;
    if (t->sh->sc) {
        send_scenario(bc, origin_ns, -1);
        return;
    }
    uint64_t now = uv_hrtime();
    bc->busy = 1;
    bc->in_head = 1;
    bc->origin_ns = origin_ns ? origin_ns : now;
    bc->sent_ns = now;
    http_msg_reset(&bc->msg);
    bc->msg.request_was_head = t->sh->is_head;
    t->stats.sent++;
    if (conn_write(&bc->c, t->sh->req, t->sh->req_len) < 0)
        fail_conn(bc, BENCH_ERR_RESET);
}

static void record_answer(struct bconn *bc)
{
    struct bthread *t = bc->t;
    uint64_t now = uv_hrtime();
    uint64_t us = now > bc->origin_ns ? (now - bc->origin_ns) / 1000 : 0;
    hist_record(&t->stats.lat, us);
    t->stats.answered++;
    size_t sec = sec_of(t, now);
    bench_series_answer(&t->stats.series, sec, us);
    int st = bc->msg.status;
    if (st >= 0 && st < BENCH_MAX_STATUS)
        t->stats.status[st]++;
    /* As in wrk: 1xx..3xx are answers (a 304, a redirect), >= 400 errors. */
    int bad = st >= 400;
    if (bad) {
        t->stats.errors[BENCH_ERR_STATUS]++;
        bench_series_error(&t->stats.series, sec);
    }
    if (bc->entry >= 0) {
        struct bench_name_stats *ns = &t->stats.names[bc->entry];
        hist_record(&ns->lat, us);
        ns->answered++;
        ns->errors += (uint64_t)bad;
    }
    bc->busy = 0;
}

/* ---- scenarios ---------------------------------------------------------- */

/* The response head of a scenario request is in: keep the session cookie a
 * login answer sets (the head's bytes are still in c->in). */
static void scenario_head(struct bconn *bc)
{
    struct bthread *t = bc->t;
    const struct bench_scenario *sc = t->sh->sc;
    if ((size_t)bc->entry != sc->nreq || bc->msg.status < 200 || bc->msg.status > 299)
        return;
    const char *base = bc->c.in.data;
    size_t nlen = strlen(sc->cookie);
    for (unsigned i = 0; i < bc->msg.nheaders; i++) {
        if (!http_header_is(&bc->msg, base, i, "set-cookie"))
            continue;
        struct http_slice v = bc->msg.headers[i].value;
        const char *s = base + v.off;
        if (v.len <= nlen || memcmp(s, sc->cookie, nlen) || s[nlen] != '=')
            continue;
        size_t start = nlen + 1, end = start;
        while (end < v.len && s[end] != ';' && s[end] != ' ' && s[end] != '\t')
            end++;
        if (end - start > BENCH_SCEN_MAX_COOKIE || end == start)
            continue; /* refused: the VU stays logged out */
        struct bvu *vu = &t->vus[bc->vu];
        if (!vu->cookie)
            vu->cookie = xmalloc(BENCH_SCEN_MAX_COOKIE);
        memcpy(vu->cookie, s + start, end - start);
        vu->cookie_len = (uint16_t)(end - start);
        vu->state = VU_IN;
    }
}

/* A scenario answer was recorded: settle the VU's session. Returns the
 * entry to send next on this connection (the one behind a login), or -1. */
static int scenario_done(struct bconn *bc)
{
    struct bthread *t = bc->t;
    const struct bench_scenario *sc = t->sh->sc;
    int entry = bc->entry, pending = bc->pending;
    bc->entry = bc->pending = -1;
    if (entry < 0)
        return -1;
    struct bvu *vu = &t->vus[bc->vu];
    if ((size_t)entry == sc->nreq) {
        if (vu->state == VU_LOGGING_IN) /* no usable cookie came back */
            vu->state = VU_OUT;
    } else if (bc->sent_session && bc->msg.status == 401) {
        vu->state = VU_OUT; /* the session is gone: log in again next time */
    }
    return pending;
}

/* Put an intended send time back in the queue (its connection went away
 * between a login and the request behind it). */
static void requeue(struct bthread *t, uint64_t at)
{
    if (t->stopping || queue_push(t, at) < 0) {
        t->stats.unfinished++;
        return;
    }
    if (t->live <= t->max_conns && (size_t)t->connecting < t->qlen)
        open_conn(t);
}

/* The next VU for a request; a session request avoids VUs whose login is in
 * flight on another connection (it would log them in twice). */
static unsigned next_vu(struct bthread *t, int session)
{
    unsigned i = t->vu_next;
    for (unsigned tries = 0; session && tries < t->nvus; tries++) {
        if (t->vus[(i + tries) % t->nvus].state != VU_LOGGING_IN) {
            i = (i + tries) % t->nvus;
            break;
        }
    }
    t->vu_next = (i + 1) % t->nvus;
    return i;
}

/* Send a scenario request: entry < 0 picks one from the mix (and a VU);
 * otherwise entry is the request behind a login, for the same VU. A session
 * request of a logged-out VU sends the login first. */
static void send_scenario(struct bconn *bc, uint64_t origin_ns, int entry)
{
    struct bthread *t = bc->t;
    const struct bshared *sh = t->sh;
    const struct bench_scenario *sc = sh->sc;
    uint64_t now = uv_hrtime();
    int after_login = entry >= 0;
    if (!after_login) {
        entry = (int)bench_scenario_pick(sc, bench_rng_next(&t->rng));
        bc->vu = next_vu(t, sc->req[entry].session);
    }
    struct bvu *vu = &t->vus[bc->vu];
    const struct bench_scen_req *rq = &sc->req[entry];
    bc->pending = -1;
    /* After a failed login the request goes out without a cookie: its 401
     * shows the failure, and no VU loops on logins. */
    if (!after_login && rq->session && vu->state != VU_IN) {
        bc->pending = entry;
        entry = (int)sc->nreq;
        rq = &sc->login;
        vu->state = VU_LOGGING_IN;
    }
    bc->entry = entry;
    bc->sent_session = rq->session && vu->state == VU_IN;
    struct bench_render r = {.rng = &t->rng, .vu = t->k + 1 + bc->vu * sh->nthreads};
    if (rq->uses_seq)
        r.seq = bench_seq_next(sh->seq);
    bc->busy = 1;
    bc->in_head = 1;
    bc->origin_ns = origin_ns ? origin_ns : now;
    bc->sent_ns = now;
    http_msg_reset(&bc->msg);
    bc->msg.request_was_head = !strcasecmp(rq->method, "HEAD");
    t->stats.sent++;
    if (bench_scenario_build(sc, rq, sh->authority, bc->sent_session ? vu->cookie : NULL,
                             vu->cookie_len, &r, &bc->req, &bc->body) < 0 ||
        conn_write(&bc->c, bc->req.data, bc->req.len) < 0)
        fail_conn(bc, BENCH_ERR_RESET);
}

static void on_data(struct conn *c)
{
    struct bconn *bc = c->data;
    while (bc->pos < c->in.len || bc->busy) {
        if (!bc->busy) { /* bytes nobody asked for: pipelining is off */
            fail_conn(bc, BENCH_ERR_PARSE);
            return;
        }
        size_t used = 0;
        int ev = http_msg_feed(&bc->msg, c->in.data, bc->pos, c->in.len - bc->pos, &used);
        bc->pos += used;
        if (ev == HTTP_EV_ERROR) {
            fail_conn(bc, BENCH_ERR_PARSE);
            return;
        }
        if (ev == HTTP_EV_HEAD) {
            bc->in_head = 0;
            if (bc->entry >= 0)
                scenario_head(bc);
        }
        /* Once the head is parsed its bytes are no longer needed. */
        if (!bc->in_head) {
            buf_consume(&c->in, bc->pos);
            bc->pos = 0;
        }
        if (ev == HTTP_EV_DONE) {
            int keep = (bc->msg.flags & HTTP_F_KEEP_ALIVE) != 0;
            if (bc->t->sh->cfg->tls_resume && !bc->session_saved && !conn_tls_resumed(c)) {
                /* After an answer (TLS 1.3 tickets come after the handshake),
                 * from a full handshake: the ticket is offered until the
                 * next full handshake replaces it. */
                void *sess = conn_tls_session(c);
                if (sess) {
                    tls_session_free(bc->t->tls_session);
                    bc->t->tls_session = sess;
                    bc->session_saved = 1;
                }
            }
            record_answer(bc);
            int pending = bc->entry >= 0 ? scenario_done(bc) : -1;
            if (!keep || c->in.len) {
                if (pending >= 0) /* the request behind the login waits for another connection */
                    requeue(bc->t, bc->origin_ns);
                fail_conn(bc, c->in.len ? BENCH_ERR_PARSE : (enum bench_err)ERR_NONE);
                return;
            }
            if (pending >= 0 && !bc->t->stopping)
                send_scenario(bc, 0, pending);
            else
                conn_next(bc);
            return;
        }
        if (ev == HTTP_EV_NEED_MORE)
            return;
    }
}

static void idle_remove(struct bthread *t, struct bconn *bc)
{
    if (!bc->idle)
        return;
    for (struct bconn **p = &t->idle; *p; p = &(*p)->idle_next) {
        if (*p == bc) {
            *p = bc->idle_next;
            break;
        }
    }
    bc->idle = 0;
}

static int queue_push(struct bthread *t, uint64_t at)
{
    if (t->qlen == t->qcap) {
        if (t->qcap >= QUEUE_MAX)
            return -ENOBUFS;
        size_t ncap = t->qcap ? t->qcap * 2 : 1024;
        uint64_t *nq = xmalloc(ncap * sizeof *nq);
        for (size_t i = 0; i < t->qlen; i++)
            nq[i] = t->queue[(t->qhead + i) % t->qcap];
        free(t->queue);
        t->queue = nq;
        t->qcap = ncap;
        t->qhead = 0;
    }
    t->queue[(t->qhead + t->qlen) % t->qcap] = at;
    t->qlen++;
    return 0;
}

static uint64_t queue_pop(struct bthread *t)
{
    uint64_t at = t->queue[t->qhead];
    t->qhead = (t->qhead + 1) % t->qcap;
    t->qlen--;
    return at;
}

/* A connection is free: give it the next request. */
static void conn_next(struct bconn *bc)
{
    struct bthread *t = bc->t;
    if (t->stopping) {
        bc->busy = 0;
        conn_close(&bc->c);
        drain_check(t);
        return;
    }
    if (!open_model(t)) {
        send_request(bc, 0);
        return;
    }
    if (t->qlen) {
        send_request(bc, queue_pop(t));
        return;
    }
    bc->idle = 1;
    bc->idle_next = t->idle;
    t->idle = bc;
}

static void on_connect(struct conn *c, int status)
{
    struct bconn *bc = c->data;
    struct bthread *t = bc->t;
    bc->connect_done = 1;
    t->connecting--;
    if (status < 0) {
        fail_conn(bc, BENCH_ERR_CONNECT);
        return;
    }
    bc->connected = 1;
    t->stats.conn_established++;
    if (c->tls) {
        t->stats.tls_handshakes++;
        t->stats.tls_resumed += (uint64_t)conn_tls_resumed(c);
    }
    if ((uint64_t)++t->established_now > t->stats.conn_peak)
        t->stats.conn_peak = (uint64_t)t->established_now;
    conn_next(bc);
}

static void on_close(struct conn *c, int status)
{
    struct bconn *bc = c->data;
    struct bthread *t = bc->t;
    if (!bc->connect_done) { /* on_connect never runs for a connection closed first */
        bc->connect_done = 1;
        t->connecting--;
    }
    if (bc->busy && status == UV_EOF && http_msg_eof(&bc->msg) == HTTP_EV_DONE) {
        record_answer(bc); /* a body delimited by the close */
        status = 0;
    }
    int kind = bc->close_err;
    if (kind == ERR_NONE && !t->stopping) {
        if (!bc->connected)
            kind = BENCH_ERR_CONNECT;
        else if (bc->busy)
            kind = status == UV_ETIMEDOUT ? BENCH_ERR_TIMEOUT : BENCH_ERR_RESET;
    }
    if (t->stopping && kind != BENCH_ERR_TIMEOUT) {
        if (bc->busy)
            t->stats.unfinished++;
    } else if (kind != ERR_NONE) {
        t->stats.errors[kind]++;
        bench_series_error(&t->stats.series, sec_of(t, uv_hrtime()));
        if (bc->busy && bc->entry >= 0)
            t->stats.names[bc->entry].errors++;
        /* Open model: a failed connect fails the oldest request waiting for it. */
        if (kind == BENCH_ERR_CONNECT && open_model(t) && t->qlen)
            queue_pop(t);
    }
    if (bc->entry >= 0 && (size_t)bc->entry == t->sh->sc->nreq &&
        t->vus[bc->vu].state == VU_LOGGING_IN)
        t->vus[bc->vu].state = VU_OUT; /* the login never answered */
    if (bc->connected)
        t->established_now--;
    idle_remove(t, bc);
    if (bc->prev)
        bc->prev->next = bc->next;
    else
        t->all = bc->next;
    if (bc->next)
        bc->next->prev = bc->prev;
    t->live--;
    if (t->stopping) {
        drain_check(t);
        return;
    }
    if (open_model(t))
        return;
    /* Closed model: keep -c connections; pause after a failure so a refused
     * target is not hammered in a tight loop. */
    if (kind == ERR_NONE) {
        open_conn(t);
    } else {
        if (!t->reconnect_due)
            t->reconnect_at = uv_hrtime() + (uint64_t)RECONNECT_MS * 1000000;
        t->reconnect_due++;
    }
}

static void on_free(struct conn *c)
{
    struct bconn *bc = c->data;
    buf_free(&bc->req);
    buf_free(&bc->body);
    free(bc);
}

static const struct conn_ops bench_conn_ops = {
    .on_data = on_data,
    .on_connect = on_connect,
    .on_close = on_close,
    .on_free = on_free,
};

static void open_conn(struct bthread *t)
{
    struct bconn *bc = xcalloc(1, sizeof *bc);
    bc->t = t;
    bc->close_err = ERR_NONE;
    bc->entry = bc->pending = -1;
    buf_init(&bc->req, t->sh->req_max);
    buf_init(&bc->body, t->sh->req_max);
    bc->c.data = bc;
    bc->opened_ns = uv_hrtime();
    http_msg_init(&bc->msg, HTTP_RESPONSE_KIND);
    bc->next = t->all;
    if (t->all)
        t->all->prev = bc;
    t->all = bc;
    t->live++;
    t->connecting++;
    t->stats.conn_attempts++;
    /* On a synchronous failure on_close has already counted it. */
    if (conn_connect(&bc->c, &t->loop, (const struct sockaddr *)&t->sh->addr, &bench_conn_ops,
                     IN_MAX, 64 * 1024 + t->sh->req_len + t->sh->req_max) == 0 &&
        t->sh->tls_ctx)
        (void)conn_tls_client(&bc->c, t->sh->tls_ctx, t->sh->tls_sni,
                              t->sh->cfg->tls_resume ? t->tls_session : NULL);
}

/* Open model: one request is due at `at`. */
static void dispatch(struct bthread *t, uint64_t at)
{
    /* Jitter: how late the scheduler itself hands the request over; waiting
     * for a connection after that is latency, not jitter. */
    uint64_t now = uv_hrtime();
    hist_record(&t->stats.jitter, now > at ? (now - at) / 1000 : 0);
    if (t->idle) {
        struct bconn *bc = t->idle;
        t->idle = bc->idle_next;
        bc->idle = 0;
        send_request(bc, at);
        return;
    }
    if (queue_push(t, at) < 0) {
        t->stats.unfinished++;
        return;
    }
    if (t->live < t->max_conns && (size_t)t->connecting < t->qlen)
        open_conn(t);
}

static void on_sched(uv_timer_t *h);
static void on_spin(uv_idle_t *h);

/* Walk the schedule: dispatch what is due, then wait for the next due time.
 * The wait is a timerfd armed with the absolute due time (a kernel hrtimer;
 * this thread's timer slack is 1 ns), polled by the loop like any socket:
 * microsecond precision without busy-waiting, so generator threads sharing
 * a CPU do not delay each other's answers. Without a timerfd: libuv timers
 * (millisecond resolution), and, when every thread has a CPU of its own,
 * the last sub-millisecond on an idle handle, which runs once per loop
 * iteration after I/O has been polled (a 0 ms timer restarted from its own
 * callback would never leave the timers phase and starve I/O). */
static void sched_run(struct bthread *t)
{
    const struct bshared *sh = t->sh;
    if (t->stopping) {
        uv_idle_stop(&t->spin);
        return;
    }
    uint64_t now = uv_hrtime();
    for (;;) {
        uint64_t at = bench_sched_plan_at(&sh->cfg->plan, sh->t0, sh->nthreads, t->k, t->next_i);
        if (at >= sh->t_end) {
            uv_idle_stop(&t->spin);
            return; /* the schedule is over; the end timer stops the thread */
        }
        if (at > now) {
            if (t->tfd >= 0) {
                /* With a CPU of its own, the thread wakes SPIN_NS early and
                 * spins the rest (a CPU waking from idle takes tens of us);
                 * sharing a CPU, it sleeps until the due time. */
                if (sh->spin && at - now <= SPIN_NS) {
                    uv_idle_start(&t->spin, on_spin);
                    return;
                }
                uint64_t wake = sh->spin ? at - SPIN_NS : at;
                /* uv_hrtime() is CLOCK_MONOTONIC, the timerfd's clock */
                struct itimerspec its = {.it_value = {.tv_sec = (time_t)(wake / 1000000000u),
                                                      .tv_nsec = (long)(wake % 1000000000u)}};
                uv_idle_stop(&t->spin);
                if (timerfd_settime(t->tfd, TFD_TIMER_ABSTIME, &its, NULL) == 0)
                    return;
            }
            if (at - now >= 1000000 || !sh->spin) {
                uv_idle_stop(&t->spin);
                /* Without spinning, round up: never send early. */
                uint64_t ms = sh->spin ? (at - now) / 1000000 : (at - now + 999999) / 1000000;
                uv_timer_start(&t->sched, on_sched, ms, 0);
            } else {
                uv_idle_start(&t->spin, on_spin);
            }
            return;
        }
        dispatch(t, at);
        t->next_i++;
    }
}

static void on_tfd(uv_poll_t *h, int status, int events)
{
    struct bthread *t = h->data;
    uint64_t expirations;
    ssize_t n = read(t->tfd, &expirations, sizeof expirations); /* clears readability */
    (void)n;
    sched_run(t);
}

static void on_sched(uv_timer_t *h)
{
    sched_run(h->data);
}

static void on_spin(uv_idle_t *h)
{
    sched_run(h->data);
}

static void on_tick(uv_timer_t *h)
{
    struct bthread *t = h->data;
    uint64_t now = uv_hrtime();
    for (struct bconn *bc = t->all, *nx; bc; bc = nx) {
        nx = bc->next;
        if (bc->busy && now - bc->sent_ns > t->timeout_ns)
            fail_conn(bc, BENCH_ERR_TIMEOUT);
        else if (!bc->connected && now - bc->opened_ns > t->timeout_ns)
            fail_conn(bc, BENCH_ERR_CONNECT);
    }
    if (t->reconnect_due && now >= t->reconnect_at && !t->stopping) {
        int n = t->reconnect_due;
        t->reconnect_due = 0;
        while (n--)
            open_conn(t);
    }
}

/* Close every connection and handle: the loop then ends. */
static void on_tpoll_closed(uv_handle_t *h)
{
    struct bthread *t = h->data;
    close(t->tfd); /* after libuv let go of it */
    t->tfd = -1;
}

static void finish_thread(struct bthread *t)
{
    if (t->finished)
        return;
    t->finished = 1;
    for (struct bconn *bc = t->all, *nx; bc; bc = nx) {
        nx = bc->next;
        conn_close(&bc->c);
    }
    uv_close((uv_handle_t *)&t->tick, NULL);
    uv_close((uv_handle_t *)&t->sched, NULL);
    if (t->tfd >= 0)
        uv_close((uv_handle_t *)&t->tpoll, on_tpoll_closed);
    uv_close((uv_handle_t *)&t->spin, NULL);
    uv_close((uv_handle_t *)&t->end, NULL);
}

/* During the drain: when no request is in flight any more, finish. */
static void drain_check(struct bthread *t)
{
    if (t->finished)
        return;
    for (struct bconn *bc = t->all; bc; bc = bc->next)
        if (bc->busy && !(bc->c.flags & CONN_F_CLOSING))
            return;
    finish_thread(t);
}

static void on_drain_end(uv_timer_t *h)
{
    finish_thread(h->data); /* what is still in flight counts as unfinished */
}

/* The run's time is up: send nothing more, and let the requests in flight
 * finish (up to --timeout after they were sent; the tick enforces it), so a
 * server stall at the very end still shows in the latency figures instead
 * of vanishing as "unfinished". */
static void on_end(uv_timer_t *h)
{
    struct bthread *t = h->data;
    t->stopping = 1;
    t->ended_ns = uv_hrtime();
    t->stats.unfinished += t->qlen;
    t->qlen = 0;
    uv_timer_stop(&t->sched);
    uv_idle_stop(&t->spin);
    if (t->tfd >= 0)
        uv_poll_stop(&t->tpoll);
    for (struct bconn *bc = t->all, *nx; bc; bc = nx) {
        nx = bc->next;
        if (!bc->busy)
            conn_close(&bc->c);
    }
    uv_timer_start(&t->end, on_drain_end, (uint64_t)t->sh->cfg->timeout_ms + TICK_MS, 0);
    drain_check(t);
}

static void thread_main(void *arg)
{
    struct bthread *t = arg;
    const struct bshared *sh = t->sh;
    uint64_t now = uv_hrtime();
    uv_timer_init(&t->loop, &t->tick);
    uv_timer_init(&t->loop, &t->sched);
    uv_idle_init(&t->loop, &t->spin);
    t->spin.data = t;
    uv_timer_init(&t->loop, &t->end);
    t->tick.data = t->sched.data = t->end.data = t;
    t->tfd = -1;
    if (open_model(t)) {
        prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL); /* this thread's hrtimers: no slack */
        t->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (t->tfd >= 0 && uv_poll_init(&t->loop, &t->tpoll, t->tfd) == 0) {
            t->tpoll.data = t;
            uv_poll_start(&t->tpoll, UV_READABLE, on_tfd);
        } else if (t->tfd >= 0) {
            close(t->tfd);
            t->tfd = -1;
        }
    }
    uv_timer_start(&t->tick, on_tick, TICK_MS, TICK_MS);
    uv_timer_start(&t->end, on_end, sh->t_end > now ? (sh->t_end - now + 999999) / 1000000 : 0, 0);
    for (int i = 0; i < t->target_conns; i++)
        open_conn(t);
    if (open_model(t))
        on_sched(&t->sched);
    uv_run(&t->loop, UV_RUN_DEFAULT);
}

static void fmt_ms(char *out, size_t n, double us)
{
    if (us < 100000)
        snprintf(out, n, "%.1fms", us / 1000.0);
    else
        snprintf(out, n, "%.0fms", us / 1000.0);
}

/* The live progress line on a terminal: once a second, the second that just
 * ended, read from the running threads' series (relaxed atomics). */
static void progress_loop(struct bthread *th, unsigned nthreads, const struct bshared *sh,
                          size_t nsecs)
{
    struct bench_series all;
    int printed = 0;
    bench_series_init(&all, nsecs);
    for (size_t s = 0; (s + 1) * 1000000000ULL <= sh->t_end - sh->t0; s++) {
        /* A little after the second ends, so its last answers are in. */
        uint64_t due = sh->t0 + (s + 1) * 1000000000ULL + 20000000ULL;
        uint64_t now = uv_hrtime();
        if (due > now)
            uv_sleep((unsigned)((due - now) / 1000000));
        memset(all.secs, 0, nsecs * sizeof *all.secs);
        for (unsigned k = 0; k < nthreads; k++)
            bench_series_merge(&all, &th[k].stats.series);
        uint64_t errors = 0;
        for (size_t i = 0; i <= s && i < nsecs; i++)
            errors += all.secs[i].errors;
        char p50[32], p99[32];
        fmt_ms(p50, sizeof p50, bench_sec_percentile(&all.secs[s], 50));
        fmt_ms(p99, sizeof p99, bench_sec_percentile(&all.secs[s], 99));
        fprintf(stderr, "\r[%3zus/%zus] %llu req/s  p50 %s  p99 %s  errors %llu", s + 1, nsecs,
                (unsigned long long)all.secs[s].count, p50, p99, (unsigned long long)errors);
        fflush(stderr);
        printed = 1;
    }
    if (printed)
        fputc('\n', stderr);
    bench_series_free(&all);
}

/* Build the request once: method, target, Host, the -H headers, body. */
static void build_request(struct buf *b, const struct bench_config *cfg,
                          const struct bench_url *url)
{
    int has_host = 0, has_cl = 0;
    for (size_t i = 0; i < cfg->headers.n; i++) {
        const char *h = cfg->headers.items[i];
        if (!strncasecmp(h, "host:", 5))
            has_host = 1;
        if (!strncasecmp(h, "content-length:", 15))
            has_cl = 1;
    }
    buf_printf(b, "%s %s HTTP/1.1\r\n", cfg->method, url->path);
    if (!has_host)
        buf_printf(b, "Host: %s\r\n", url->authority);
    for (size_t i = 0; i < cfg->headers.n; i++)
        buf_printf(b, "%s\r\n", cfg->headers.items[i]);
    size_t blen = cfg->body ? strlen(cfg->body) : 0;
    if (cfg->body && !has_cl)
        buf_printf(b, "Content-Length: %zu\r\n", blen);
    buf_puts(b, "\r\n");
    if (blen)
        buf_append(b, cfg->body, blen);
}

int bench_run(const struct bench_config *cfg, const struct bench_url *url,
              struct bench_stats *stats, double *elapsed_s, char *err, size_t errlen)
{
    struct bshared sh;
    struct buf req;
    memset(&sh, 0, sizeof sh);
    socklen_t alen;
    if (net_parse_addr(url->hostport, 1, &sh.addr, &alen, err, errlen) < 0)
        return -1;
    buf_init(&req, 1u << 30);
    uint64_t seq = 0;
    sh.sc = cfg->sc;
    sh.seq = &seq;
    sh.authority = url->authority;
    if (url->tls) {
        sh.tls_ctx = tls_client_ctx_new(0);
        if (!sh.tls_ctx) {
            snprintf(err, errlen, "cannot create a TLS context");
            buf_free(&req);
            return -1;
        }
        struct sockaddr_storage probe;
        socklen_t plen;
        char ignore[64];
        /* SNI carries a name, never an address (RFC 6066 3). */
        if (net_parse_addr(url->hostport, 0, &probe, &plen, ignore, sizeof ignore) < 0)
            sh.tls_sni = url->host;
    }
    if (sh.sc) {
        /* A request's upper bound: its templates' (computed at parse), the
         * Host and Cookie lines. */
        size_t most = sh.sc->login.max_bytes;
        for (size_t i = 0; i < sh.sc->nreq; i++)
            if (sh.sc->req[i].max_bytes > most)
                most = sh.sc->req[i].max_bytes;
        sh.req_max =
            most + strlen(url->authority) + BENCH_SCEN_MAX_COOKIE + BENCH_SCEN_MAX_NAME + 64;
    } else {
        build_request(&req, cfg, url);
    }
    sh.cfg = cfg;
    sh.req = req.data;
    sh.req_len = req.len;
    sh.is_head = !strcasecmp(cfg->method, "HEAD");
    unsigned nthreads = (unsigned)cfg->threads;
    sh.nthreads = nthreads;
    cpu_set_t cpus;
    sh.spin = sched_getaffinity(0, sizeof cpus, &cpus) == 0 && CPU_COUNT(&cpus) >= (int)nthreads;
    long long maxc = cfg->max_connections;
    if (!maxc) {
        maxc = cfg->connections * 4 < 1024 ? cfg->connections * 4 : 1024;
        if (maxc < cfg->connections)
            maxc = cfg->connections;
    }
    struct bthread *th = xcalloc(nthreads, sizeof *th);
    size_t nsecs = (size_t)((cfg->duration_ms + 999) / 1000);
    sh.t0 = uv_hrtime();
    sh.t_end = sh.t0 + cfg->duration_ms * 1000000ULL;
    for (unsigned k = 0; k < nthreads; k++) {
        struct bthread *t = &th[k];
        t->sh = &sh;
        t->k = k;
        t->target_conns = (int)(cfg->connections / nthreads) + (k < cfg->connections % nthreads);
        t->max_conns = (int)(maxc / nthreads) + (k < maxc % nthreads);
        if (t->max_conns < t->target_conns)
            t->max_conns = t->target_conns;
        t->timeout_ns = (uint64_t)cfg->timeout_ms * 1000000ULL;
        bench_stats_init(&t->stats);
        bench_series_init(&t->stats.series, nsecs);
        if (sh.sc) {
            bench_stats_init_names(&t->stats, sh.sc->nreq + 1);
            unsigned users = (unsigned)sh.sc->run.users;
            t->nvus = users / nthreads + (k < users % nthreads);
            t->vus = xcalloc(t->nvus ? t->nvus : 1, sizeof *t->vus);
            t->rng = uv_hrtime() ^ ((uint64_t)k << 56);
        }
        uv_loop_init(&t->loop);
        uv_thread_create(&t->tid, thread_main, t);
    }
    if (isatty(STDERR_FILENO))
        progress_loop(th, nthreads, &sh, nsecs);
    uint64_t ended = sh.t_end;
    for (unsigned k = 0; k < nthreads; k++) {
        struct bthread *t = &th[k];
        uv_thread_join(&t->tid);
        uv_loop_close(&t->loop);
        if (t->ended_ns > ended)
            ended = t->ended_ns;
        bench_stats_merge(stats, &t->stats);
        bench_stats_free(&t->stats);
        tls_session_free(t->tls_session);
        free(t->queue);
        for (unsigned i = 0; i < t->nvus; i++)
            free(t->vus[i].cookie);
        free(t->vus);
    }
    *elapsed_s = (double)(ended - sh.t0) / 1e9;
    free(th);
    buf_free(&req);
    tls_client_ctx_free(sh.tls_ctx);
    return 0;
}
