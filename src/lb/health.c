#include "lb/health.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "net/net.h"

#define TICK_MS 100

struct health {
    struct lb_worker *w;
    uv_timer_t tick;
    uint64_t next_check_ms;
    struct list checks; /* in flight */
    int stopping;
};

struct check {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    uv_timer_t timer;
    struct health *h;
    struct backend *b;
    struct list link;
    char req[512];
    char resp[256];
    size_t rlen;
    int closes, done;
};

static void on_check_closed(uv_handle_t *hd)
{
    struct check *c = hd->data;
    if (--c->closes)
        return;
    pool_unref(c->b);
    free(c);
}

/* Record the verdict once, then close everything. */
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
        if (pass) {
            __atomic_fetch_add(&b->checks_passed, 1, __ATOMIC_RELAXED);
            b->hc_fail_streak = 0;
            if (++b->hc_pass_streak >= lb_cfg(lb)->rise &&
                __atomic_load_n(&b->hc_down, __ATOMIC_RELAXED))
                pool_set_health(&lb->pool, b, 0, "health check passed");
        } else {
            __atomic_fetch_add(&b->checks_failed, 1, __ATOMIC_RELAXED);
            snprintf(b->hc_last_error, sizeof b->hc_last_error, "%s", why);
            b->hc_pass_streak = 0;
            if (++b->hc_fail_streak >= lb_cfg(lb)->fall &&
                !__atomic_load_n(&b->hc_down, __ATOMIC_RELAXED)) {
                char msg[160];
                snprintf(msg, sizeof msg, "health check failed %d times: %s", b->hc_fail_streak,
                         why);
                pool_set_health(&lb->pool, b, 1, msg);
            }
        }
    }
    c->closes = 2;
    uv_close((uv_handle_t *)&c->timer, on_check_closed);
    uv_close((uv_handle_t *)&c->tcp, on_check_closed);
}

static void on_check_timeout(uv_timer_t *t)
{
    check_finish(t->data, 0, "timeout");
}

static void check_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *out)
{
    struct check *c = hd->data;
    out->base = c->resp + c->rlen;
    out->len = sizeof c->resp - 1 - c->rlen;
}

static void on_check_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct check *c = s->data;
    if (nread < 0) {
        check_finish(c, 0, nread == UV_EOF ? "closed before answering" : uv_strerror((int)nread));
        return;
    }
    c->rlen += (size_t)nread;
    c->resp[c->rlen] = '\0';
    if (!memchr(c->resp, '\n', c->rlen) && c->rlen < sizeof c->resp - 1)
        return;
    /* "HTTP/1.x NNN ..." is all a check needs. */
    int st = 0;
    if (c->rlen >= 12 && !memcmp(c->resp, "HTTP/1.", 7) && c->resp[8] == ' ')
        st = (c->resp[9] - '0') * 100 + (c->resp[10] - '0') * 10 + (c->resp[11] - '0');
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

static void on_check_written(uv_write_t *req, int status)
{
    struct check *c = req->handle->data;
    if (status < 0 && !c->done)
        check_finish(c, 0, uv_strerror(status));
}

static void on_check_connect(uv_connect_t *req, int status)
{
    struct check *c = req->handle->data;
    if (c->done)
        return;
    if (status < 0) {
        check_finish(c, 0, uv_strerror(status));
        return;
    }
    uv_buf_t b = uv_buf_init(c->req, (unsigned)strlen(c->req));
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_check_written) < 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, check_alloc, on_check_read) < 0)
        check_finish(c, 0, "cannot send the check");
}

static void start_check(struct backend *b, void *arg)
{
    struct health *h = arg;
    struct lb *lb = h->w->lb;
    if (b->hc_running || b->draining)
        return;
    struct check *c = xcalloc(1, sizeof *c);
    c->h = h;
    c->b = b;
    pool_ref(b);
    b->hc_running = 1;
    list_insert_tail(&h->checks, &c->link);
    snprintf(c->req, sizeof c->req,
             "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: surge-health-check\r\n"
             "Connection: close\r\n\r\n",
             lb_cfg(lb)->health_check, b->address);
    uv_tcp_init(&h->w->loop, &c->tcp);
    c->tcp.data = c;
    uv_timer_init(&h->w->loop, &c->timer);
    c->timer.data = c;
    uv_timer_start(&c->timer, on_check_timeout, (uint64_t)lb_cfg(lb)->health_timeout_ms, 0);
    if (uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&b->addr, on_check_connect) < 0)
        check_finish(c, 0, "cannot connect");
}

static void on_tick(uv_timer_t *t)
{
    struct health *h = t->data;
    struct lb *lb = h->w->lb;
    pool_tick(&lb->pool);
    if (!lb_cfg(lb)->health_check)
        return;
    uint64_t now = uv_now(&h->w->loop);
    if (now < h->next_check_ms)
        return;
    h->next_check_ms = now + (uint64_t)lb_cfg(lb)->health_interval_ms;
    pool_foreach(&lb->pool, start_check, h);
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
