/* Non-blocking store reads on a libuv loop (store_async.h). */
#include "data/store_async.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "data/store_int.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define TICK_MS        250
/* Host names are looked up again this often (and after a connection of
 * the target failed), in the background: connections keep the previous
 * answer meanwhile. */
#define RESOLVE_EVERY_MS 30000
#define RESOLVE_RETRY_MS 1000
#define HOSTADDR_MAX     1024

struct aconn {
    struct store_async *s;
    unsigned target;
    struct store_db *db;         /* NULL: not open */
    uv_poll_t *poll;             /* on fd; NULL when none */
    int fd, events, ready;       /* ready: connected and idle */
    uint64_t since_ms;           /* connect or statement start */
    struct store_async_req *req; /* the statement in flight */
    struct store_rows rows;
};

struct target {
    const char *location;
    struct store_async_req *head, *tail;
    unsigned queued;
    uint64_t retry_at_ms;
    unsigned backoff_ms;
    /* Name look-ups (a driver with aresolve): on libuv's thread pool, never
     * on the loop; hostaddr is the last answer ("" none needed), unset
     * until the first one. */
    struct store_async *s;
    uv_work_t work;
    int resolving, resolved, found_rc;
    uint64_t resolve_at_ms; /* the next look-up, at the earliest */
    char hostaddr[HOSTADDR_MAX], found[HOSTADDR_MAX], err[256];
};

struct store_async {
    uv_loop_t *loop;
    const struct store_layout *l;
    const struct store_driver *d;
    const char *const *sql;
    unsigned nsql, k, per, ntargets, rr;
    int replicas; /* targets are the replicas (else the primary alone) */
    struct target targets[STORE_MAX_REPLICAS];
    struct aconn *conns; /* ntargets x per */
    uv_timer_t tick;
    unsigned handles; /* open uv handles (polls + tick) */
    int closing;
};

static void maybe_free(struct store_async *s)
{
    if (!s->closing || s->handles)
        return;
    for (unsigned i = 0; i < s->ntargets * s->per; i++)
        store_rows_free(&s->conns[i].rows);
    free(s->conns);
    free(s);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct store_async *s = h->data;
    if (h->type == UV_POLL)
        free(h);
    s->handles--;
    maybe_free(s);
}

static void unwatch(struct aconn *c)
{
    if (!c->poll)
        return;
    c->poll->data = c->s;
    uv_close((uv_handle_t *)c->poll, on_handle_closed);
    c->poll = NULL;
    c->fd = -1;
    c->events = 0;
}

static void on_poll(uv_poll_t *h, int status, int events);

/* Poll the connection's socket for want (STORE_WANT_*; 0 = idle: readable,
 * so a server that closes an idle connection is noticed). renew: a fresh
 * poll handle, for a connection still connecting: libpq may have closed
 * its socket and opened another (the next address), often under the same
 * descriptor number, which the old handle no longer watches. */
static int watch(struct aconn *c, int want, int renew)
{
    struct store_async *s = c->s;
    int fd = s->d->asocket(c->db);
    if (fd < 0)
        return -EIO;
    int ev = (want & STORE_WANT_WRITE ? UV_WRITABLE : 0) |
             (want & STORE_WANT_READ || !want ? UV_READABLE : 0);
    if (c->poll && (renew || fd != c->fd))
        unwatch(c);
    if (!c->poll) {
        c->poll = xmalloc(sizeof *c->poll);
        if (uv_poll_init_socket(s->loop, c->poll, fd) < 0) {
            free(c->poll);
            c->poll = NULL;
            return -EIO;
        }
        s->handles++;
        c->poll->data = c;
        c->fd = fd;
        c->events = 0;
    }
    if (ev != c->events) {
        if (uv_poll_start(c->poll, ev, on_poll) < 0)
            return -EIO;
        c->events = ev;
    }
    return 0;
}

static void fail_queue(struct store_async *s, struct target *t, int rc)
{
    while (t->head) {
        struct store_async_req *r = t->head;
        t->head = r->next_;
        t->queued--;
        r->cb(r, rc, NULL);
    }
    t->tail = NULL;
}

/* The connection failed: close it, fail its statement and, when the
 * server has no other live connection, the reads waiting for it. */
static void conn_failed(struct aconn *c, int rc)
{
    struct store_async *s = c->s;
    struct target *t = &s->targets[c->target];
    unwatch(c);
    if (c->db)
        s->d->close(c->db);
    c->db = NULL;
    c->ready = 0;
    struct store_async_req *r = c->req;
    c->req = NULL;
    if (rc != -ECANCELED) {
        t->backoff_ms = t->backoff_ms ? t->backoff_ms * 2 : BACKOFF_MIN_MS;
        if (t->backoff_ms > BACKOFF_MAX_MS)
            t->backoff_ms = BACKOFF_MAX_MS;
        t->retry_at_ms = uv_now(s->loop) + t->backoff_ms;
        t->resolve_at_ms = 0; /* the server may have moved: ask again before the retry */
        if (s->replicas)
            store_router_down(s->l->router, s->k, c->target);
    }
    if (r)
        r->cb(r, rc == -ECANCELED ? rc : -EIO, NULL);
    int alive = 0;
    for (unsigned i = 0; i < s->per; i++)
        alive |= s->conns[c->target * s->per + i].db != NULL;
    if (!alive)
        fail_queue(s, t, rc == -ECANCELED ? rc : -EIO);
}

static void pump(struct store_async *s, struct target *t);

/* Drive c after its socket's events (or a send). */
static void step(struct aconn *c)
{
    struct store_async *s = c->s;
    int connecting = !c->ready && !c->req;
    int rc = s->d->astep(c->db, &c->rows);
    if (rc < 0) {
        conn_failed(c, rc);
        return;
    }
    if (watch(c, rc, connecting) < 0) {
        conn_failed(c, -EIO);
        return;
    }
    if (rc > 0)
        return;
    struct target *t = &s->targets[c->target];
    if (!c->ready)
        t->backoff_ms = 0; /* connected */
    c->ready = 1;
    c->since_ms = 0;
    struct store_async_req *r = c->req;
    c->req = NULL;
    if (r)
        r->cb(r, 0, &c->rows);
    pump(s, t);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct aconn *c = h->data;
    (void)events;
    /* An error on the socket (libuv: UV_EBADF for POLLERR, the handle then
     * stopped) is libpq's to judge: a refused connect moves on to the next
     * address, a broken connection fails in astep. */
    if (status < 0)
        c->events = 0;
    step(c);
}

static void send_req(struct aconn *c, struct store_async_req *r)
{
    struct store_async *s = c->s;
    store_rows_reset(&c->rows);
    c->req = r;
    c->ready = 0;
    c->since_ms = uv_now(s->loop);
    if (s->d->asend(c->db, r->stmt, r->args, r->nargs) < 0) {
        conn_failed(c, -EIO);
        return;
    }
    step(c);
}

static void resolve_work(uv_work_t *w)
{
    struct target *t = w->data;
    t->found_rc = t->s->d->aresolve(t->location, t->found, sizeof t->found, t->err, sizeof t->err);
}

static void resolve_done(uv_work_t *w, int status)
{
    struct target *t = w->data;
    struct store_async *s = t->s;
    t->resolving = 0;
    s->handles--;
    if (s->closing) {
        maybe_free(s);
        return;
    }
    uint64_t now = uv_now(s->loop);
    if (status == 0 && t->found_rc == 0) {
        memcpy(t->hostaddr, t->found, sizeof t->hostaddr);
        t->resolved = 1;
        t->resolve_at_ms = now + RESOLVE_EVERY_MS;
    } else {
        log_warn_rl("store: %s: %s", t->location, status < 0 ? uv_strerror(status) : t->err);
        t->resolve_at_ms = now + RESOLVE_RETRY_MS;
    }
}

/* Look t's host names up in the background when due. 0 when t may be
 * connected now (addresses known, or the driver needs none). */
static int resolve(struct store_async *s, struct target *t)
{
    if (!s->d->aresolve)
        return 0;
    if (!t->resolving && !s->closing && uv_now(s->loop) >= t->resolve_at_ms) {
        t->s = s;
        t->work.data = t;
        if (uv_queue_work(s->loop, &t->work, resolve_work, resolve_done) == 0) {
            t->resolving = 1;
            s->handles++;
        }
    }
    return t->resolved ? 0 : -1;
}

/* Start connection c of target t (not open). */
static void open_conn(struct aconn *c, struct target *t)
{
    struct store_async *s = c->s;
    char err[256];
    if (s->d->astart(t->location, s->d->aresolve ? t->hostaddr : NULL, s->sql, s->nsql, &c->db, err,
                     sizeof err) < 0) {
        c->db = NULL;
        log_warn_rl("store: cannot connect to %s: %s", t->location, err);
        conn_failed(c, -EIO);
        return;
    }
    c->since_ms = uv_now(s->loop);
    c->ready = 0;
    step(c);
}

/* Hand waiting reads of t to its idle connections; open one more when
 * reads wait and the pool has room. */
static void pump(struct store_async *s, struct target *t)
{
    unsigned ti = (unsigned)(t - s->targets);
    struct aconn *pool = &s->conns[ti * s->per];
    while (t->head && !s->closing) {
        struct aconn *idle = NULL, *closed = NULL;
        int connecting = 0;
        for (unsigned i = 0; i < s->per; i++) {
            if (pool[i].ready && !idle)
                idle = &pool[i];
            else if (!pool[i].db && !closed)
                closed = &pool[i];
            else if (pool[i].db && !pool[i].ready && !pool[i].req)
                connecting = 1;
        }
        if (idle) {
            struct store_async_req *r = t->head;
            t->head = r->next_;
            if (!t->head)
                t->tail = NULL;
            t->queued--;
            send_req(idle, r);
            continue;
        }
        if (closed && !connecting && uv_now(s->loop) >= t->retry_at_ms && resolve(s, t) == 0)
            open_conn(closed, t);
        return;
    }
}

/* Connects and statements that take too long fail; so do reads that have
 * waited too long in a queue. */
static void on_tick(uv_timer_t *h)
{
    struct store_async *s = h->data;
    uint64_t now = uv_now(s->loop);
    for (unsigned i = 0; i < s->ntargets * s->per; i++) {
        struct aconn *c = &s->conns[i];
        if (c->db && !c->ready && c->since_ms && now - c->since_ms > STORE_ASYNC_TIMEOUT_MS) {
            log_warn_rl("store: %s did not answer within %d ms", s->targets[c->target].location,
                        STORE_ASYNC_TIMEOUT_MS);
            conn_failed(c, -ETIMEDOUT);
        }
    }
    for (unsigned ti = 0; ti < s->ntargets; ti++) {
        struct target *t = &s->targets[ti];
        while (t->head && now - t->head->queued_ms_ > STORE_ASYNC_TIMEOUT_MS) {
            struct store_async_req *r = t->head;
            t->head = r->next_;
            if (!t->head)
                t->tail = NULL;
            t->queued--;
            r->cb(r, -ETIMEDOUT, NULL);
        }
        pump(s, t);
    }
}

struct store_async *store_async_new(uv_loop_t *loop, const struct store_layout *l,
                                    enum store_role role, const char *const *sql, unsigned nsql,
                                    unsigned per)
{
    const struct store_driver *d = l->driver;
    if (!d->astart || !d->asend || !d->astep || !d->asocket || per == 0 ||
        (role != STORE_CATALOG && role != STORE_DIRECTORY))
        return NULL;
    struct store_async *s = xcalloc(1, sizeof *s);
    s->loop = loop;
    s->l = l;
    s->d = d;
    s->sql = sql;
    s->nsql = nsql;
    s->k = (unsigned)role;
    s->per = per;
    s->replicas = l->router && l->nreplica[s->k] > 0;
    s->ntargets = s->replicas ? l->nreplica[s->k] : 1;
    for (unsigned i = 0; i < s->ntargets; i++)
        s->targets[i].location = s->replicas             ? l->replica[s->k][i]
                                 : role == STORE_CATALOG ? l->catalog
                                                         : l->directory;
    s->conns = xcalloc(s->ntargets * per, sizeof *s->conns);
    for (unsigned i = 0; i < s->ntargets * per; i++) {
        s->conns[i].s = s;
        s->conns[i].target = i / per;
        s->conns[i].fd = -1;
        store_rows_init(&s->conns[i].rows);
    }
    uv_timer_init(loop, &s->tick);
    s->tick.data = s;
    s->handles = 1;
    uv_timer_start(&s->tick, on_tick, TICK_MS, TICK_MS);
    uv_unref((uv_handle_t *)&s->tick);
    for (unsigned i = 0; i < s->ntargets; i++)
        resolve(s, &s->targets[i]); /* the first look-ups start with the loop */
    return s;
}

int store_async_read(struct store_async *s, struct store_async_req *req)
{
    if (!s || s->closing)
        return -EAGAIN;
    unsigned ti = 0;
    if (s->replicas) {
        /* Only when a replica serves: else the blocking path reads from
         * the primary and counts the fallback once. */
        int serving = 0;
        for (unsigned i = 0; i < s->ntargets && !serving; i++)
            serving = store_router_serving(s->l->router, s->k, i);
        if (!serving)
            return -EAGAIN;
        int i = store_router_pick(s->l->router, s->k, 0, &s->rr);
        if (i < 0)
            return -EAGAIN;
        ti = (unsigned)i;
    }
    struct target *t = &s->targets[ti];
    if (t->queued >= STORE_ASYNC_QUEUE_MAX || uv_now(s->loop) < t->retry_at_ms ||
        resolve(s, t) < 0) /* addresses not known yet: the store pool reads meanwhile */
        return -EAGAIN;
    req->next_ = NULL;
    req->queued_ms_ = uv_now(s->loop);
    if (t->tail)
        t->tail->next_ = req;
    else
        t->head = req;
    t->tail = req;
    t->queued++;
    pump(s, t);
    return 0;
}

void store_async_close(struct store_async *s)
{
    if (!s || s->closing)
        return;
    s->closing = 1;
    s->handles++; /* held while the callbacks run */
    for (unsigned i = 0; i < s->ntargets * s->per; i++)
        if (s->conns[i].db)
            conn_failed(&s->conns[i], -ECANCELED);
    for (unsigned ti = 0; ti < s->ntargets; ti++) {
        fail_queue(s, &s->targets[ti], -ECANCELED);
        if (s->targets[ti].resolving) /* resolve_done runs anyway, then frees */
            uv_cancel((uv_req_t *)&s->targets[ti].work);
    }
    uv_close((uv_handle_t *)&s->tick, on_handle_closed);
    s->handles--;
    maybe_free(s);
}
