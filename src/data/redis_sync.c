/* A blocking Redis connection with timeouts, backoff and Sentinel
 * discovery (redis_sync.h). */
#include "data/redis_sync.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/clock.h"
#include "base/log.h"

void redis_sync_init(struct redis_sync *r, const struct redis_target *t, size_t node,
                     unsigned timeout_ms)
{
    memset(r, 0, sizeof *r);
    r->target = *t;
    r->node = node < t->naddrs ? node : 0;
    r->timeout_ms = timeout_ms ? timeout_ms : 1;
}

static void drop(struct redis_sync *r)
{
    if (r->ctx)
        redisFree(r->ctx);
    r->ctx = NULL;
    r->pending = 0;
}

void redis_sync_free(struct redis_sync *r)
{
    drop(r);
}

int redis_sync_connected(const struct redis_sync *r)
{
    return r->ctx != NULL;
}

static struct timeval tv_of(unsigned ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

static redisContext *connect_to(const struct redis_addr *a, unsigned timeout_ms)
{
    redisContext *c = redisConnectWithTimeout(a->host, a->port, tv_of(timeout_ms));
    if (!c)
        return NULL;
    if (c->err || redisSetTimeout(c, tv_of(timeout_ms)) != REDIS_OK) {
        log_debug("redis %s:%d: %s", a->host, a->port, c->errstr);
        redisFree(c);
        return NULL;
    }
    redisEnableKeepAlive(c);
    return c;
}

/* Ask the Sentinels, in turn, for the primary's address; then check that
 * it calls itself a master (a Sentinel may lag a failover by a moment). */
static redisContext *connect_sentinel(struct redis_sync *r)
{
    struct redis_target *t = &r->target;
    for (size_t k = 0; k < t->naddrs; k++) {
        size_t i = (r->node + k) % t->naddrs;
        redisContext *s = connect_to(&t->addrs[i], r->timeout_ms);
        if (!s)
            continue;
        redisReply *rep = redisCommand(s, "SENTINEL get-master-addr-by-name %s", t->master);
        redisFree(s);
        if (!rep)
            continue;
        struct redis_addr p = {.port = 0};
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
            rep->element[0]->type == REDIS_REPLY_STRING && rep->element[0]->len <= REDIS_HOST_MAX &&
            rep->element[1]->type == REDIS_REPLY_STRING) {
            memcpy(p.host, rep->element[0]->str, rep->element[0]->len);
            p.host[rep->element[0]->len] = '\0';
            p.port = (int)strtol(rep->element[1]->str, NULL, 10);
        }
        freeReplyObject(rep);
        if (p.port <= 0 || p.port > 65535)
            continue;
        r->node = i; /* ask this one first next time */
        redisContext *c = connect_to(&p, r->timeout_ms);
        if (!c)
            continue;
        redisReply *role = redisCommand(c, "ROLE");
        int master = role && role->type == REDIS_REPLY_ARRAY && role->elements > 0 &&
                     role->element[0]->type == REDIS_REPLY_STRING &&
                     !strcmp(role->element[0]->str, "master");
        if (role)
            freeReplyObject(role);
        if (!master) {
            redisFree(c);
            continue;
        }
        if (strcmp(p.host, r->primary.host) || p.port != r->primary.port)
            log_info("redis-sentinel %s: primary is %s:%d", t->master, p.host, p.port);
        r->primary = p;
        return c;
    }
    return NULL;
}

/* Backoff growth stops here: 2 s for a node (50 ms << 6 capped), 400 ms
 * behind Sentinel, where the next try is a question to a Sentinel and a
 * failover's new primary should be found soon after its promotion. */
static unsigned max_attempt(const struct redis_sync *r)
{
    return r->target.sentinel ? 3 : 16;
}

static int ensure(struct redis_sync *r)
{
    if (r->ctx)
        return 0;
    uint64_t now = clock_mono_ms();
    if (now < r->next_try_ms)
        return -EAGAIN;
    if (r->target.sentinel) {
        r->ctx = connect_sentinel(r);
    } else {
        r->ctx = connect_to(&r->target.addrs[r->node], r->timeout_ms);
        if (r->ctx)
            r->primary = r->target.addrs[r->node];
    }
    if (r->ctx) {
        if (r->cmd_timeout_ms && r->cmd_timeout_ms != r->timeout_ms)
            redisSetTimeout(r->ctx, tv_of(r->cmd_timeout_ms));
    }
    if (!r->ctx) {
        r->next_try_ms = clock_mono_ms() + redis_backoff_ms(r->attempt, redis_random());
        if (r->attempt < max_attempt(r))
            r->attempt++;
        return -ECONNREFUSED;
    }
    return 0;
}

static redisReply *check(struct redis_sync *r, redisReply *rep)
{
    if (!rep) {
        int timed_out =
            r->ctx && r->ctx->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK);
        log_debug("redis %s:%d: %s; reconnecting", r->primary.host, r->primary.port,
                  r->ctx ? r->ctx->errstr : "no connection");
        drop(r);
        /* A closed connection may be retried at once (a restarted node, a
         * promoted replica: failed connects back off by themselves); a
         * node that accepts but does not answer backs off here, or every
         * call would wait out a timeout. */
        if (timed_out) {
            r->next_try_ms = clock_mono_ms() + redis_backoff_ms(r->attempt, redis_random());
            if (r->attempt < max_attempt(r))
                r->attempt++;
        }
        return NULL;
    }
    if (rep->type == REDIS_REPLY_ERROR &&
        (!strncmp(rep->str, "READONLY", 8) || !strncmp(rep->str, "LOADING", 7) ||
         !strncmp(rep->str, "MASTERDOWN", 10))) {
        log_info_rl("redis %s:%d: %s; reconnecting", r->primary.host, r->primary.port, rep->str);
        freeReplyObject(rep);
        drop(r);
        return NULL;
    }
    r->attempt = 0; /* an answer: the node is back */
    return rep;
}

redisReply *redis_sync_command(struct redis_sync *r, const char *fmt, ...)
{
    if (ensure(r) < 0)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(r->ctx, fmt, ap);
    va_end(ap);
    return check(r, rep);
}

redisReply *redis_sync_commandargv(struct redis_sync *r, int argc, const char **argv,
                                   const size_t *argvlen)
{
    if (ensure(r) < 0)
        return NULL;
    return check(r, redisCommandArgv(r->ctx, argc, argv, argvlen));
}

int redis_sync_append(struct redis_sync *r, int argc, const char **argv, const size_t *argvlen)
{
    int rc = ensure(r);
    if (rc < 0)
        return rc;
    if (redisAppendCommandArgv(r->ctx, argc, argv, argvlen) != REDIS_OK) {
        drop(r);
        return -ENOMEM;
    }
    r->pending++;
    return 0;
}

redisReply *redis_sync_reply(struct redis_sync *r)
{
    if (!r->ctx || !r->pending)
        return NULL;
    void *rep = NULL;
    if (redisGetReply(r->ctx, &rep) != REDIS_OK)
        rep = NULL;
    else
        r->pending--;
    return check(r, rep);
}

void redis_sync_set_command_timeout(struct redis_sync *r, unsigned ms)
{
    if (ms == r->cmd_timeout_ms)
        return; /* set already, on this connection too (ensure applies it) */
    r->cmd_timeout_ms = ms;
    if (r->ctx)
        redisSetTimeout(r->ctx, tv_of(ms ? ms : r->timeout_ms));
}
