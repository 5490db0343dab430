/* Cache driver `redis`: values on one or more Redis nodes, keys spread by
 * rendezvous hashing (redis_pick_node: adding a node moves only the keys it
 * wins), shared by every instance. cache.c puts the local driver in front
 * of it for hot keys (two levels) and uses the extras of this driver:
 * a short lock key per key for single flight across processes, and an
 * invalidation channel so that a write on one instance drops the others'
 * local copies.
 *
 * Keys (prefix "surge:"): surge:c:<key> = "<expires wall ms> <delta ms>\n"
 * then the value, PX = its TTL; surge:l:<key> = the lock (SET NX PX), held
 * by an instance id and released by a compare-and-delete script. Channel
 * surge:inv carries "<instance id> <key>".
 *
 * Worker threads use blocking connections from a small pool per node, each
 * call bounded by CACHE_REDIS_TIMEOUT_MS; a node that fails is skipped by
 * every thread for a backoff delay (full jitter, growing while it stays
 * down), so losing a node costs misses (loads from the store), not errors
 * or waits. The loop thread holds two connections per node (redis_async):
 * a subscriber for the invalidations, and one for the loop's own reads
 * (get_async: a product read that misses the local level asks Redis from
 * the loop, pipelined, without a hop to a worker thread). */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "data/cache.h"
#include "data/redis_async.h"
#include "data/redis_sync.h"

#define CACHE_REDIS_TIMEOUT_MS 150
#define POOL_MAX               64
#define INV_CHANNEL            "surge:inv"

struct node {
    pthread_mutex_t mu;
    struct redis_sync *free[POOL_MAX];
    size_t nfree;
    uint64_t down_until_ms; /* monotonic; under mu */
    unsigned attempt;
    struct redis_async *sub; /* loop thread only: invalidations */
    struct redis_async *cmd; /* loop thread only: the loop's reads */
};

struct cache_impl {
    struct redis_target t;
    struct node nodes[REDIS_MAX_NODES];
    uint64_t instance;
    cache_invalidate_fn on_inv;
    void *inv_arg;
    int live; /* nodes whose invalidation subscription is up (atomic) */
};

static int cr_open(const char *url, size_t max_bytes, struct cache_impl **out, char *err,
                   size_t errlen)
{
    struct redis_target t;
    char why[160];
    if (redis_target_parse(url, &t, why, sizeof why) < 0 || t.sentinel) {
        snprintf(err, errlen, "'%s': %s", url,
                 t.sentinel ? "a cache takes redis:// nodes (no Sentinel)" : why);
        return -EINVAL;
    }
    struct cache_impl *c = xcalloc(1, sizeof *c);
    c->t = t;
    for (size_t i = 0; i < t.naddrs; i++)
        pthread_mutex_init(&c->nodes[i].mu, NULL);
    /* 63 bits: at most 19 decimal digits, what redis_parse_u64s reads back. */
    c->instance = (redis_random() ^ ((uint64_t)clock_wall_ms() << 20)) >> 1;
    *out = c;
    return 0;
}

static void cr_close(struct cache_impl *c)
{
    for (size_t i = 0; i < c->t.naddrs; i++) {
        struct node *n = &c->nodes[i];
        for (size_t k = 0; k < n->nfree; k++) {
            redis_sync_free(n->free[k]);
            free(n->free[k]);
        }
        pthread_mutex_destroy(&n->mu);
    }
    free(c);
}

/* A connection to node i, or NULL while the node is in backoff. */
static struct redis_sync *take(struct cache_impl *c, size_t i)
{
    struct node *n = &c->nodes[i];
    struct redis_sync *r = NULL;
    pthread_mutex_lock(&n->mu);
    if (clock_mono_ms() < n->down_until_ms) {
        pthread_mutex_unlock(&n->mu);
        return NULL;
    }
    if (n->nfree)
        r = n->free[--n->nfree];
    pthread_mutex_unlock(&n->mu);
    if (!r) {
        r = xmalloc(sizeof *r);
        redis_sync_init(r, &c->t, i, CACHE_REDIS_TIMEOUT_MS);
    }
    return r;
}

/* Return r after a call; ok = 0 when the node failed it (no reply). A
 * failure also empties the node's pool: its idle connections were opened
 * to the same node and are most likely dead too (a killed or restarted
 * node); kept, each would fail once after the node is back and put it in
 * backoff again. */
static void give(struct cache_impl *c, size_t i, struct redis_sync *r, int ok)
{
    struct node *n = &c->nodes[i];
    struct redis_sync *stale[POOL_MAX + 1];
    size_t nstale = 0;
    pthread_mutex_lock(&n->mu);
    if (ok) {
        n->attempt = 0;
    } else {
        uint64_t d = redis_backoff_ms(n->attempt, redis_random());
        if (n->attempt < 16)
            n->attempt++;
        n->down_until_ms = clock_mono_ms() + d;
        log_warn_rl("redis cache %s:%d: no answer; skipped for %llu ms (misses go to the store)",
                    c->t.addrs[i].host, c->t.addrs[i].port, (unsigned long long)d);
        while (n->nfree)
            stale[nstale++] = n->free[--n->nfree];
    }
    if (n->nfree < POOL_MAX) {
        n->free[n->nfree++] = r;
        r = NULL;
    }
    pthread_mutex_unlock(&n->mu);
    if (r)
        stale[nstale++] = r;
    while (nstale) {
        redis_sync_free(stale[--nstale]);
        free(stale[nstale]);
    }
}

static size_t node_of(struct cache_impl *c, const char *key)
{
    return redis_pick_node(&c->t, key, strlen(key));
}

/* A stored value: "<expires> <delta>\n" then the value. 0 with *val and
 * *len pointing into s, or -ENOENT. */
static int parse_value(const char *s, size_t n, const char **val, size_t *len,
                       struct cache_meta *meta)
{
    uint64_t v[2];
    size_t used;
    if (redis_parse_u64s(s, n, v, 2, &used) < 0 || used == 0 || s[used - 1] != '\n' ||
        v[1] > UINT32_MAX)
        return -ENOENT;
    meta->expires_ms = v[0];
    meta->delta_ms = (uint32_t)v[1];
    *val = s + used;
    *len = n - used;
    return 0;
}

struct get_async {
    cache_get_cb cb;
    void *arg;
};

static void on_get_reply(redisReply *rep, void *arg)
{
    struct get_async *g = arg;
    struct cache_meta m = {0, 0};
    const char *val = NULL;
    size_t len = 0;
    int rc = -ENOENT;
    if (rep && rep->type == REDIS_REPLY_STRING)
        rc = parse_value(rep->str, rep->len, &val, &len, &m);
    g->cb(rc, val, len, &m, g->arg);
    free(g);
}

static int cr_get_async(struct cache_impl *c, const char *key, cache_get_cb cb, void *arg)
{
    struct node *n = &c->nodes[node_of(c, key)];
    if (!n->cmd)
        return -ENOTCONN;
    struct get_async *g = xmalloc(sizeof *g);
    g->cb = cb;
    g->arg = arg;
    int rc = redis_async_command(n->cmd, on_get_reply, g, "GET surge:c:%s", key);
    if (rc < 0)
        free(g);
    return rc;
}

static int cr_get(struct cache_impl *c, const char *key, struct buf *out, struct cache_meta *meta)
{
    size_t i = node_of(c, key);
    struct redis_sync *r = take(c, i);
    if (!r)
        return -ENOENT;
    redisReply *rep = redis_sync_command(r, "GET surge:c:%s", key);
    give(c, i, r, rep != NULL);
    if (!rep)
        return -ENOENT;
    int rc = -ENOENT;
    const char *val;
    size_t len;
    if (rep->type == REDIS_REPLY_STRING && parse_value(rep->str, rep->len, &val, &len, meta) == 0)
        rc = buf_append(out, val, len) == 0 ? 0 : -ENOENT;
    freeReplyObject(rep);
    return rc;
}

static int cr_set(struct cache_impl *c, const char *key, const void *val, size_t len,
                  uint64_t ttl_ms, uint32_t delta_ms)
{
    size_t i = node_of(c, key);
    struct redis_sync *r = take(c, i);
    if (!r)
        return -EIO;
    struct buf v;
    buf_init(&v, len + 64);
    if (buf_printf(&v, "%" PRIu64 " %u\n", clock_wall_ms() + ttl_ms, delta_ms) < 0 ||
        buf_append(&v, val, len) < 0) {
        buf_free(&v);
        give(c, i, r, 1);
        return -ENOBUFS;
    }
    redisReply *rep =
        redis_sync_command(r, "SET surge:c:%s %b PX %" PRIu64, key, v.data, v.len, ttl_ms);
    buf_free(&v);
    give(c, i, r, rep != NULL);
    int rc = rep && rep->type != REDIS_REPLY_ERROR ? 0 : -EIO;
    if (rep)
        freeReplyObject(rep);
    return rc;
}

static int cr_del(struct cache_impl *c, const char *key)
{
    size_t i = node_of(c, key);
    struct redis_sync *r = take(c, i);
    if (!r)
        return -EIO;
    redisReply *rep = redis_sync_command(r, "DEL surge:c:%s", key);
    give(c, i, r, rep != NULL);
    if (!rep)
        return -EIO;
    freeReplyObject(rep);
    return 0;
}

static int cr_lock(struct cache_impl *c, const char *key, uint64_t ttl_ms)
{
    size_t i = node_of(c, key);
    struct redis_sync *r = take(c, i);
    if (!r)
        return -EIO;
    redisReply *rep = redis_sync_command(r, "SET surge:l:%s %" PRIu64 " NX PX %" PRIu64, key,
                                         c->instance, ttl_ms);
    give(c, i, r, rep != NULL);
    if (!rep)
        return -EIO;
    int rc = rep->type == REDIS_REPLY_STATUS ? 1 : rep->type == REDIS_REPLY_NIL ? 0 : -EIO;
    freeReplyObject(rep);
    return rc;
}

static void cr_unlock(struct cache_impl *c, const char *key)
{
    static const char lua[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then"
                              " return redis.call('DEL', KEYS[1]) end return 0";
    size_t i = node_of(c, key);
    struct redis_sync *r = take(c, i);
    if (!r)
        return; /* the lock expires by itself */
    redisReply *rep = redis_sync_command(r, "EVAL %s 1 surge:l:%s %" PRIu64, lua, key, c->instance);
    give(c, i, r, rep != NULL);
    if (rep)
        freeReplyObject(rep);
}

/* DEL key and PUBLISH msg as one MULTI/EXEC, pipelined: one round trip,
 * atomic (no reader can fill the key between them unannounced), and far
 * cheaper for Redis than a Lua script (EVAL cost ~36 us of Redis CPU a
 * call here, MULTI/DEL/PUBLISH/EXEC a few). The EXEC's reply, or NULL
 * when the connection failed (the caller hands it back as broken). */
static redisReply *del_and_publish(struct redis_sync *r, const char *key, const char *msg)
{
    char k[CACHE_KEY_MAX + 16];
    snprintf(k, sizeof k, "surge:c:%s", key);
    const char *argv[4][3] = {{"MULTI"}, {"DEL", k}, {"PUBLISH", INV_CHANNEL, msg}, {"EXEC"}};
    const int argc[4] = {1, 2, 3, 1};
    size_t lens[4][3];
    for (int i = 0; i < 4; i++) {
        for (int a = 0; a < argc[i]; a++)
            lens[i][a] = strlen(argv[i][a]);
        if (redis_sync_append(r, argc[i], argv[i], lens[i]) < 0)
            return NULL;
    }
    redisReply *rep = NULL;
    for (int i = 0; i < 4; i++) {
        if (rep)
            freeReplyObject(rep);
        if (!(rep = redis_sync_reply(r)))
            return NULL;
    }
    return rep;
}

static int cr_publish(struct cache_impl *c, const char *key, int del)
{
    size_t owner = node_of(c, key);
    int sent = 0, deleted = !del;
    char msg[CACHE_KEY_MAX + 32];
    snprintf(msg, sizeof msg, "%" PRIu64 " %s", c->instance, key);
    /* Every node: each instance subscribes on every node, so a message
     * reaches it while any node is up (duplicates are harmless). */
    for (size_t i = 0; i < c->t.naddrs; i++) {
        struct redis_sync *r = take(c, i);
        if (!r)
            continue;
        int both = del && i == owner;
        redisReply *rep = both ? del_and_publish(r, key, msg)
                               : redis_sync_command(r, "PUBLISH " INV_CHANNEL " %s", msg);
        give(c, i, r, rep != NULL);
        if (!rep)
            continue;
        /* EXEC answers [deleted, receivers]; PUBLISH its receivers. */
        const redisReply *n = rep;
        if (both)
            n = rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 ? rep->element[1] : NULL;
        if (n && n->type == REDIS_REPLY_INTEGER) {
            sent++;
            deleted |= i == owner;
        } else {
            log_warn_rl("redis cache: %s: %s", both ? "DEL+PUBLISH" : "PUBLISH",
                        rep->type == REDIS_REPLY_ERROR ? rep->str : "an unexpected reply");
        }
        freeReplyObject(rep);
    }
    return sent && deleted ? 0 : -EIO;
}

static void on_inv(const char *p, size_t len, void *arg)
{
    struct cache_impl *c = arg;
    char key[CACHE_KEY_MAX + 1];
    uint64_t from;
    size_t used;
    if (redis_parse_u64s(p, len, &from, 1, &used) < 0 || used == len || p[used - 1] != ' ' ||
        len - used > CACHE_KEY_MAX || memchr(p + used, '\0', len - used))
        return; /* not one of ours */
    if (from == c->instance)
        return; /* our own write: our copy is already current */
    memcpy(key, p + used, len - used);
    key[len - used] = '\0';
    c->on_inv(key, c->inv_arg);
}

static void on_sub_state(int subscribed, void *arg)
{
    struct cache_impl *c = arg;
    __atomic_add_fetch(&c->live, subscribed ? 1 : -1, __ATOMIC_RELEASE);
}

static int cr_local_ok(struct cache_impl *c)
{
    return __atomic_load_n(&c->live, __ATOMIC_ACQUIRE) > 0;
}

static int cr_attach(struct cache_impl *c, uv_loop_t *loop, cache_invalidate_fn fn, void *arg)
{
    c->on_inv = fn;
    c->inv_arg = arg;
    for (size_t i = 0; i < c->t.naddrs; i++) {
        c->nodes[i].sub = redis_async_new(loop, &c->t.addrs[i], 1000);
        redis_async_on_state(c->nodes[i].sub, on_sub_state, c);
        redis_async_subscribe(c->nodes[i].sub, INV_CHANNEL, on_inv, c);
        c->nodes[i].cmd = redis_async_new(loop, &c->t.addrs[i], CACHE_REDIS_TIMEOUT_MS);
    }
    return 0;
}

static void cr_detach(struct cache_impl *c)
{
    for (size_t i = 0; i < c->t.naddrs; i++) {
        if (c->nodes[i].sub)
            redis_async_close(c->nodes[i].sub);
        if (c->nodes[i].cmd)
            redis_async_close(c->nodes[i].cmd);
        c->nodes[i].sub = c->nodes[i].cmd = NULL;
    }
}

const struct cache_driver cache_redis_driver = {
    .name = "redis",
    .shared = 1,
    .open = cr_open,
    .close = cr_close,
    .get = cr_get,
    .set = cr_set,
    .del = cr_del,
    .lock = cr_lock,
    .unlock = cr_unlock,
    .publish = cr_publish,
    .attach = cr_attach,
    .detach = cr_detach,
    .get_async = cr_get_async,
    .local_ok = cr_local_ok,
};
