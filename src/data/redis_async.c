/* An asynchronous Redis connection on a libuv loop (redis_async.h): our
 * libuv adapter for hiredis, pipelined commands with deadlines, reconnect
 * with backoff, subscriptions renewed on reconnect. */
#include "data/redis_async.h"

#include <errno.h>
#include <hiredis/async.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"

/* ---- the libuv adapter: hiredis's ev hooks on a uv_poll_t ---- */

struct uv_ev {
    uv_poll_t poll;
    redisAsyncContext *ac; /* NULL once hiredis has cleaned up */
    int events;
};

static void ev_on_poll(uv_poll_t *h, int status, int events)
{
    struct uv_ev *e = h->data;
    /* An error status (a refused connect is UV_EBADF) is still an event for
     * hiredis: it finds the socket error itself and calls back. Dropping it,
     * as the 0.14 adapter does, leaves the connect pending forever. */
    int ev = status < 0 ? e->events : events;
    if (e->ac && (ev & UV_READABLE))
        redisAsyncHandleRead(e->ac);
    if (e->ac && (ev & UV_WRITABLE))
        redisAsyncHandleWrite(e->ac); /* e->ac is NULL if the read freed the context */
}

static void ev_update(struct uv_ev *e, int flag, int on)
{
    int ev = on ? (e->events | flag) : (e->events & ~flag);
    if (ev == e->events)
        return;
    e->events = ev;
    if (ev)
        uv_poll_start(&e->poll, ev, ev_on_poll);
    else
        uv_poll_stop(&e->poll);
}

static void ev_add_read(void *p)
{
    ev_update(p, UV_READABLE, 1);
}

static void ev_del_read(void *p)
{
    ev_update(p, UV_READABLE, 0);
}

static void ev_add_write(void *p)
{
    ev_update(p, UV_WRITABLE, 1);
}

static void ev_del_write(void *p)
{
    ev_update(p, UV_WRITABLE, 0);
}

static void ev_on_close(uv_handle_t *h)
{
    free(h->data);
}

static void ev_cleanup(void *p)
{
    struct uv_ev *e = p;
    e->ac = NULL;
    uv_poll_stop(&e->poll);
    uv_close((uv_handle_t *)&e->poll, ev_on_close);
}

static int ev_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    struct uv_ev *e = xcalloc(1, sizeof *e);
    if (uv_poll_init_socket(loop, &e->poll, ac->c.fd) < 0) {
        free(e);
        return -EIO;
    }
    e->poll.data = e;
    e->ac = ac;
    ac->ev.data = e;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    /* The connect completes on the first writable event: wait for it now,
     * not only once a command is queued. */
    ev_update(e, UV_WRITABLE, 1);
    return 0;
}

/* ---- the client ---- */

enum { ST_IDLE, ST_CONNECTING, ST_READY, ST_CLOSED };

struct pending {
    struct pending *next;
    struct redis_async *c;
    redis_async_cb cb;
    void *arg;
    uint64_t deadline_ms; /* uv_now */
};

struct redis_async {
    uv_loop_t *loop;
    struct redis_addr addr;
    unsigned timeout_ms;
    redisAsyncContext *ac;
    int state;
    uv_timer_t retry;    /* backoff, then the connect's deadline */
    uv_timer_t deadline; /* the oldest pending reply's deadline */
    struct pending *head, *tail;
    unsigned attempt;
    unsigned long connects;
    char channel[128];
    redis_message_cb on_message;
    void *msg_arg;
    int subscribed;
    redis_state_cb on_state;
    void *state_arg;
    int open_handles;
};

static void start_connect(struct redis_async *c);
static void on_deadline(uv_timer_t *t);

static void on_retry(uv_timer_t *t)
{
    struct redis_async *c = t->data;
    if (c->state == ST_IDLE) {
        start_connect(c);
    } else if (c->state == ST_CONNECTING) {
        log_warn_rl("redis %s:%d: no connection within %u ms", c->addr.host, c->addr.port,
                    c->timeout_ms);
        redisAsyncContext *ac = c->ac;
        c->ac = NULL;
        c->state = ST_IDLE;
        redisAsyncFree(ac); /* not connected: no disconnect callback */
        uint64_t d = redis_backoff_ms(c->attempt, redis_random());
        if (c->attempt < 16)
            c->attempt++;
        uv_timer_start(&c->retry, on_retry, d, 0);
    }
}

static void schedule_retry(struct redis_async *c)
{
    c->state = ST_IDLE;
    if (c->subscribed && c->on_state)
        c->on_state(0, c->state_arg);
    c->subscribed = 0;
    uint64_t d = redis_backoff_ms(c->attempt, redis_random());
    if (c->attempt < 16)
        c->attempt++;
    uv_timer_start(&c->retry, on_retry, d, 0);
}

static void on_sub_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct redis_async *c = priv;
    redisReply *rep = r;
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
        rep->element[0]->type != REDIS_REPLY_STRING)
        return;
    if (!strcmp(rep->element[0]->str, "subscribe")) {
        c->subscribed = 1;
        c->attempt = 0;
        if (c->on_state)
            c->on_state(1, c->state_arg);
    } else if (!strcmp(rep->element[0]->str, "message") &&
               rep->element[2]->type == REDIS_REPLY_STRING && c->on_message) {
        c->on_message(rep->element[2]->str, rep->element[2]->len, c->msg_arg);
    }
}

static void subscribe_now(struct redis_async *c)
{
    if (c->state == ST_READY && c->channel[0])
        redisAsyncCommand(c->ac, on_sub_reply, c, "SUBSCRIBE %s", c->channel);
}

/* The first reply on a new connection: the node answers, so it is ready
 * (a stopped process's kernel still completes the TCP connect). */
static void on_hello(redisAsyncContext *ac, void *r, void *priv)
{
    struct redis_async *c = priv;
    if (!r || c->state != ST_CONNECTING)
        return;
    uv_timer_stop(&c->retry);
    c->state = ST_READY;
    c->connects++;
    if (c->connects > 1)
        log_info("redis %s:%d: connected again", c->addr.host, c->addr.port);
    if (c->channel[0])
        subscribe_now(c);
    else
        c->attempt = 0;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct redis_async *c = ac->data;
    if (c->state != ST_CONNECTING)
        return;
    if (status != REDIS_OK) {
        log_debug("redis %s:%d: %s", c->addr.host, c->addr.port, ac->errstr);
        c->ac = NULL; /* hiredis frees it after this callback */
        schedule_retry(c);
        return;
    }
    /* Still CONNECTING, under the connect deadline, until the PING answers. */
    redisAsyncCommand(c->ac, on_hello, c, "PING");
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct redis_async *c = ac->data;
    c->ac = NULL;
    if (c->state == ST_CLOSED)
        return;
    if (status != REDIS_OK)
        log_warn_rl("redis %s:%d: connection lost (%s); reconnecting", c->addr.host, c->addr.port,
                    ac->errstr ? ac->errstr : "closed");
    schedule_retry(c);
}

static void start_connect(struct redis_async *c)
{
    redisAsyncContext *ac = redisAsyncConnect(c->addr.host, c->addr.port);
    if (!ac || ac->err || ev_attach(ac, c->loop) < 0) {
        if (ac) {
            log_debug("redis %s:%d: %s", c->addr.host, c->addr.port, ac->errstr);
            redisAsyncFree(ac);
        }
        schedule_retry(c);
        return;
    }
    ac->data = c;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ac = ac;
    c->state = ST_CONNECTING;
    uv_timer_start(&c->retry, on_retry, c->timeout_ms, 0);
}

static void arm_deadline(struct redis_async *c)
{
    if (c->state == ST_CLOSED)
        return;
    if (!c->head) {
        uv_timer_stop(&c->deadline);
        return;
    }
    uint64_t now = uv_now(c->loop);
    uint64_t d = c->head->deadline_ms > now ? c->head->deadline_ms - now : 0;
    uv_timer_start(&c->deadline, on_deadline, d, 0);
}

static void on_deadline(uv_timer_t *t)
{
    struct redis_async *c = t->data;
    if (!c->head || c->state != ST_READY)
        return;
    if (c->head->deadline_ms > uv_now(c->loop)) {
        arm_deadline(c);
        return;
    }
    /* The oldest reply is late: replies come in order, so every later one
     * is at least as late. Drop the connection: hiredis calls each pending
     * callback with NULL, then on_disconnect schedules the reconnect. */
    log_warn_rl("redis %s:%d: no reply within %u ms; dropping the connection", c->addr.host,
                c->addr.port, c->timeout_ms);
    redisAsyncFree(c->ac);
}

static void on_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct pending *p = priv;
    struct redis_async *c = p->c;
    for (struct pending **pp = &c->head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            if (c->tail == p)
                c->tail = prev;
            break;
        }
    }
    p->cb(r, p->arg);
    free(p);
    arm_deadline(c);
}

int redis_async_command(struct redis_async *c, redis_async_cb cb, void *arg, const char *fmt, ...)
{
    if (c->state != ST_READY || c->channel[0])
        return -ENOTCONN;
    struct pending *p = xcalloc(1, sizeof *p);
    p->c = c;
    p->cb = cb;
    p->arg = arg;
    p->deadline_ms = uv_now(c->loop) + c->timeout_ms;
    va_list ap;
    va_start(ap, fmt);
    int rc = redisvAsyncCommand(c->ac, on_reply, p, fmt, ap);
    va_end(ap);
    if (rc != REDIS_OK) {
        free(p);
        return -EIO;
    }
    int was_empty = c->head == NULL;
    if (c->tail)
        c->tail->next = p;
    else
        c->head = p;
    c->tail = p;
    if (was_empty)
        arm_deadline(c);
    return 0;
}

int redis_async_subscribe(struct redis_async *c, const char *channel, redis_message_cb on_message,
                          void *arg)
{
    if (c->channel[0] || c->head)
        return -EBUSY;
    snprintf(c->channel, sizeof c->channel, "%s", channel);
    c->on_message = on_message;
    c->msg_arg = arg;
    subscribe_now(c);
    return 0;
}

void redis_async_on_state(struct redis_async *c, redis_state_cb cb, void *arg)
{
    c->on_state = cb;
    c->state_arg = arg;
}

int redis_async_ready(const struct redis_async *c)
{
    return c->state == ST_READY && (!c->channel[0] || c->subscribed);
}

unsigned long redis_async_connects(const struct redis_async *c)
{
    return c->connects;
}

struct redis_async *redis_async_new(uv_loop_t *loop, const struct redis_addr *addr,
                                    unsigned timeout_ms)
{
    struct redis_async *c = xcalloc(1, sizeof *c);
    c->loop = loop;
    c->addr = *addr;
    c->timeout_ms = timeout_ms ? timeout_ms : 1;
    uv_timer_init(loop, &c->retry);
    uv_timer_init(loop, &c->deadline);
    c->retry.data = c->deadline.data = c;
    c->open_handles = 2;
    start_connect(c);
    return c;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct redis_async *c = h->data;
    if (--c->open_handles == 0)
        free(c);
}

void redis_async_close(struct redis_async *c)
{
    c->state = ST_CLOSED;
    if (c->ac) {
        redisAsyncContext *ac = c->ac;
        c->ac = NULL;
        redisAsyncFree(ac); /* pending callbacks get NULL */
    }
    uv_close((uv_handle_t *)&c->retry, on_timer_closed);
    uv_close((uv_handle_t *)&c->deadline, on_timer_closed);
}
