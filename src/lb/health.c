#include "lb/health.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "net/conn.h"
#include "net/net.h"

#define TICK_MS 100

struct health {
    struct lb_worker *w;
    uv_timer_t tick;
    uint64_t next_check_ms;
    struct list checks; /* in flight */
    int stopping;
    int checking; /* checks were on at the last tick */
};

struct check {
    struct conn conn; /* the connection layer: connect, caps, timeout, close */
    struct health *h;
    struct backend *b;
    struct list link;
    int done;
};

static void on_check_free(struct conn *cn)
{
    struct check *c = container_of(cn, struct check, conn);
    pool_unref(c->b);
    free(c);
}

/* Record the verdict once, then close. */
static void check_finish(struct check *c, int pass, const char *why)
{
    if (c->done)
        return;
    c->done = 1;
    struct backend *b = c->b;
    struct lb *lb = c->h->w->lb;
    list_remove(&c->link);
    b->hc_running = 0;
    if (!c->h->stopping) {
        const struct lb_config *cfg = lb_cfg(lb);
        if (pass) {
            __atomic_fetch_add(&b->checks_passed, 1, __ATOMIC_RELAXED);
            b->hc_fail_streak = 0;
            if (++b->hc_pass_streak >= cfg->rise && __atomic_load_n(&b->hc_down, __ATOMIC_RELAXED))
                pool_set_health(&lb->pool, b, 0, "health check passed");
            /* Only passes seen while ejected count towards ending it. */
            if (!__atomic_load_n(&b->ejected_until_ms, __ATOMIC_RELAXED))
                b->hc_ejected_passes = 0;
            else if (++b->hc_ejected_passes >= cfg->rise)
                pool_end_ejection(&lb->pool, b, "health checks pass again");
        } else {
            __atomic_fetch_add(&b->checks_failed, 1, __ATOMIC_RELAXED);
            snprintf(b->hc_last_error, sizeof b->hc_last_error, "%s", why);
            b->hc_pass_streak = 0;
            b->hc_ejected_passes = 0;
            if (++b->hc_fail_streak >= cfg->fall &&
                !__atomic_load_n(&b->hc_down, __ATOMIC_RELAXED)) {
                char msg[160];
                snprintf(msg, sizeof msg, "health check failed %d times: %s", b->hc_fail_streak,
                         why);
                pool_set_health(&lb->pool, b, 1, msg);
            }
        }
    }
    conn_close(&c->conn);
}

static void on_check_connect(struct conn *cn, int status)
{
    struct check *c = container_of(cn, struct check, conn);
    if (status < 0) {
        check_finish(c, 0, uv_strerror(status));
        return;
    }
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: surge-health-check\r\n"
                     "Connection: close\r\n\r\n",
                     lb_cfg(c->h->w->lb)->health_check, c->b->address);
    if (n < 0 || (size_t)n >= sizeof req || conn_write(&c->conn, req, (size_t)n) < 0)
        check_finish(c, 0, "cannot send the check");
}

/* "HTTP/1.x NNN ..." is all a check needs. */
static void on_check_data(struct conn *cn)
{
    struct check *c = container_of(cn, struct check, conn);
    const char *r = c->conn.in.data;
    size_t len = c->conn.in.len;
    if (!memchr(r, '\n', len) && len < c->conn.in.max_size)
        return;
    int st = 0;
    if (len >= 12 && !memcmp(r, "HTTP/1.", 7) && r[8] == ' ')
        st = (r[9] - '0') * 100 + (r[10] - '0') * 10 + (r[11] - '0');
    if (st >= 200 && st < 400) {
        check_finish(c, 1, NULL);
    } else {
        char why[64];
        if (st)
            snprintf(why, sizeof why, "status %d", st);
        else
            snprintf(why, sizeof why, "not an HTTP response");
        check_finish(c, 0, why);
    }
}

static void on_check_timeout(struct conn *cn)
{
    check_finish(container_of(cn, struct check, conn), 0, "timeout");
}

static void on_check_close(struct conn *cn, int status)
{
    struct check *c = container_of(cn, struct check, conn);
    /* status 0 is our own close after the verdict; uv_strerror(0) would even
     * allocate (libuv's text for unknown codes). */
    if (c->done || status == 0)
        return;
    check_finish(c, 0, status == UV_EOF ? "closed before answering" : uv_strerror(status));
}

static const struct conn_ops check_ops = {
    .on_data = on_check_data,
    .on_connect = on_check_connect,
    .on_timeout = on_check_timeout,
    .on_close = on_check_close,
    .on_free = on_check_free,
};

static void start_check(struct health *h, struct backend *b)
{
    if (b->hc_running || backend_state(b) == BACKEND_DRAINING)
        return;
    struct check *c = xcalloc(1, sizeof *c);
    c->h = h;
    c->b = b;
    pool_ref(b);
    b->hc_running = 1;
    list_insert_tail(&h->checks, &c->link);
    if (conn_connect(&c->conn, &h->w->loop, (const struct sockaddr *)&b->addr, &check_ops, 256,
                     1024) == 0 &&
        (!h->w->lb->up_tls || conn_tls_client(&c->conn, h->w->lb->up_tls, NULL, NULL) == 0))
        conn_timeout(&c->conn, (uint64_t)lb_cfg(h->w->lb)->health_timeout_ms);
}

struct backend_list {
    struct backend **b;
    size_t n;
};

static void collect(struct backend *b, void *arg)
{
    struct backend_list *l = arg;
    l->b = xrealloc(l->b, (l->n + 1) * sizeof *l->b);
    pool_ref(b);
    l->b[l->n++] = b;
}

/* Checks turned off by a reload: nothing would ever bring back a backend
 * they took down, so their verdicts end now. */
static void forget_verdicts(struct lb *lb)
{
    struct backend_list l = {NULL, 0};
    pool_foreach(&lb->pool, collect, &l);
    for (size_t i = 0; i < l.n; i++) {
        if (__atomic_load_n(&l.b[i]->hc_down, __ATOMIC_RELAXED))
            pool_set_health(&lb->pool, l.b[i], 0, "health checks turned off");
        l.b[i]->hc_pass_streak = l.b[i]->hc_fail_streak = l.b[i]->hc_ejected_passes = 0;
        pool_unref(l.b[i]);
    }
    free(l.b);
}

/* Every TICK_MS: the pool's tick, then (every --health-interval) one check
 * per listed backend. The checks start after the pool's read lock is
 * released: a connect that fails at once reports its verdict, which may
 * take the write lock. */
static void on_tick(uv_timer_t *t)
{
    struct health *h = t->data;
    struct lb *lb = h->w->lb;
    pool_tick(&lb->pool);
    if (!lb_cfg(lb)->health_check) {
        if (h->checking) {
            h->checking = 0;
            forget_verdicts(lb);
        }
        return;
    }
    h->checking = 1;
    uint64_t now = uv_now(&h->w->loop);
    if (now < h->next_check_ms)
        return;
    h->next_check_ms = now + (uint64_t)lb_cfg(lb)->health_interval_ms;
    struct backend_list l = {NULL, 0};
    pool_foreach(&lb->pool, collect, &l);
    for (size_t i = 0; i < l.n; i++) {
        start_check(h, l.b[i]);
        pool_unref(l.b[i]);
    }
    free(l.b);
}

int health_start(struct lb_worker *w)
{
    struct health *h = xcalloc(1, sizeof *h);
    h->w = w;
    list_init(&h->checks);
    w->health = h;
    uv_timer_init(&w->loop, &h->tick);
    h->tick.data = h;
    uv_unref((uv_handle_t *)&h->tick);
    return uv_timer_start(&h->tick, on_tick, TICK_MS, TICK_MS);
}

static void on_tick_closed(uv_handle_t *hd)
{
    free(hd->data);
}

void health_stop(struct lb_worker *w)
{
    struct health *h = w->health;
    if (!h)
        return;
    w->health = NULL;
    h->stopping = 1;
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &h->checks)
    {
        check_finish(list_entry(pos, struct check, link), 0, "stopping");
    }
    uv_close((uv_handle_t *)&h->tick, on_tick_closed);
}
