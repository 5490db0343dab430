/* Session store driver `redis` (and `redis-sentinel`): sessions and
 * failed-login counters in one Redis primary, shared by every instance.
 *
 * Keys (prefix "surge:"):
 *   surge:s:<hash>  "<user_id> <created_ms> <seen_ms>", PX = the time left
 *                   before the idle or the absolute bound, whichever is
 *                   first, renewed (SET XX) when last_seen rolls forward.
 *                   Redis's TTL removes expired sessions without a purge;
 *                   the bounds in the value are checked on every lookup too,
 *                   so a TTL that outlived a changed --session-idle cannot
 *                   extend a session.
 *   surge:f:<key>   a failure count whose PX is the rest of its window.
 *   surge:sf:<hash> the session's read fence (store_conns_fence text: the
 *                   primaries' WAL positions after its last write), with
 *                   the session's own PX when set, removed with it.
 *
 * The failure counter is one Lua script (EVAL): add, clamp at 0, and start
 * the window's expiry run atomically inside Redis, so concurrent attempts
 * on every instance each see a distinct count (INCR then EXPIRE as two
 * commands would leave a counter without expiry if the client died between
 * them).
 *
 * Lookups are made from the app's loop (lookup_async: one pipelined
 * connection per process, so the lookups of every request in flight share
 * a write and a read, and no worker thread waits on Redis); every other
 * call, and a lookup while the loop's connection is down, uses one blocking
 * connection per worker thread (struct redis_sync). Measured: a blocking
 * GET per /api/me cost Redis ~12 us of CPU a lookup on the apps' core, the
 * pipelined one ~1.5 (docs/benchmarks.md). Every call is bounded by
 * SESSION_REDIS_TIMEOUT_MS; a node that is down makes calls fail at once
 * (backoff), which the app turns into 503. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "data/redis_async.h"
#include "data/redis_sync.h"
#include "data/session.h"

#define SESSION_REDIS_TIMEOUT_MS 300

/* KEYS[1] the counter; ARGV[1] the delta, ARGV[2] the window (ms).
 * Returns {count, ms until the window ends}. */
static const char failures_lua[] =
    "local a = tonumber(ARGV[1])\n"
    "local n = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "if a == 0 or (a < 0 and n == 0) then\n"
    "  local t = redis.call('PTTL', KEYS[1])\n"
    "  if t < 0 then t = 0 end\n"
    "  return {n, t}\n"
    "end\n"
    "n = redis.call('INCRBY', KEYS[1], a)\n"
    "if n < 0 then redis.call('SET', KEYS[1], 0, 'KEEPTTL') n = 0 end\n"
    "local t = redis.call('PTTL', KEYS[1])\n"
    "if t < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) t = tonumber(ARGV[2]) end\n"
    "return {n, t}\n";

/* KEYS[1] the session, KEYS[2] its fence; ARGV[1] the fence. The fence
 * lives no longer than the session: 0 when the session is gone. */
static const char fence_set_lua[] = "local t = redis.call('PTTL', KEYS[1])\n"
                                    "if t <= 0 then return 0 end\n"
                                    "redis.call('SET', KEYS[2], ARGV[1], 'PX', t)\n"
                                    "return 1\n";

struct session_conn {
    struct redis_sync r;
};

static int sr_parse(const char *url, struct redis_target *t)
{
    char err[160];
    if (redis_target_parse(url, t, err, sizeof err) < 0)
        return -EINVAL;
    return t->naddrs == 1 || t->sentinel ? 0 : -EINVAL;
}

static int sr_migrate(const char *url, char *err, size_t errlen)
{
    struct redis_target t;
    char why[160];
    if (redis_target_parse(url, &t, why, sizeof why) < 0) {
        snprintf(err, errlen, "--sessions: %s", why);
        return -EINVAL;
    }
    if (!t.sentinel && t.naddrs != 1) {
        snprintf(err, errlen, "--sessions: one redis:// node (or a redis-sentinel:// URL)");
        return -EINVAL;
    }
    return 0; /* nothing to create; a server that is down is not an error here */
}

static struct session_conn *sr_open(const char *url)
{
    struct redis_target t;
    if (sr_parse(url, &t) < 0)
        return NULL;
    struct session_conn *s = xcalloc(1, sizeof *s);
    redis_sync_init(&s->r, &t, 0, SESSION_REDIS_TIMEOUT_MS);
    return s;
}

static void sr_close(struct session_conn *s)
{
    if (!s)
        return;
    redis_sync_free(&s->r);
    free(s);
}

/* A reply that is not an error: 0; else -EIO (freed). */
static int ok_reply(redisReply *r)
{
    if (!r)
        return -EIO;
    int rc = r->type == REDIS_REPLY_ERROR ? -EIO : 0;
    if (rc < 0)
        log_warn_rl("redis sessions: %s", r->str);
    freeReplyObject(r);
    return rc;
}

static uint64_t ttl_left(uint64_t now, uint64_t created, uint64_t seen, uint64_t idle_ms,
                         uint64_t max_ms)
{
    uint64_t a = seen + idle_ms, b = created + max_ms, end = a < b ? a : b;
    return end > now ? end - now : 1;
}

static int sr_create(struct session_conn *s, const char *hash, int64_t user_id, uint64_t now_ms,
                     uint64_t idle_ms, uint64_t max_ms)
{
    char v[80];
    snprintf(v, sizeof v, "%" PRId64 " %" PRIu64 " %" PRIu64, user_id, now_ms, now_ms);
    uint64_t ttl = ttl_left(now_ms, now_ms, now_ms, idle_ms, max_ms);
    return ok_reply(redis_sync_command(&s->r, "SET surge:s:%s %s PX %" PRIu64, hash, v, ttl));
}

/* What a lookup found in a session's value (see the keys above). */
enum sr_verdict { SR_VALID, SR_TOUCH, SR_EXPIRED, SR_BAD };

/* Judge a GET's reply r (not nil) at now_ms: *uid, and for SR_TOUCH the
 * renewed value and PX for the SET XX that rolls last_seen forward.
 * Anything but a value of ours is SR_BAD, logged. Shared by the blocking
 * and the loop's lookups. */
static enum sr_verdict sr_value(const redisReply *r, uint64_t now_ms, uint64_t idle_ms,
                                uint64_t max_ms, int64_t *uid, char *val, size_t vallen,
                                uint64_t *ttl)
{
    uint64_t x[3];
    size_t used;
    if (r->type != REDIS_REPLY_STRING || redis_parse_u64s(r->str, r->len, x, 3, &used) < 0 ||
        used != r->len || x[0] > INT64_MAX) {
        log_warn_rl("redis sessions: %s", r->type == REDIS_REPLY_ERROR
                                              ? r->str
                                              : "a session value is not ours; treated as unknown");
        return SR_BAD;
    }
    uint64_t created = x[1], seen = x[2];
    if (now_ms >= created + max_ms || now_ms >= seen + idle_ms)
        return SR_EXPIRED;
    *uid = (int64_t)x[0];
    if (now_ms < seen + SESSION_TOUCH_MS && now_ms < seen + idle_ms / 4)
        return SR_VALID;
    snprintf(val, vallen, "%" PRId64 " %" PRIu64 " %" PRIu64, *uid, created, now_ms);
    *ttl = ttl_left(now_ms, created, now_ms, idle_ms, max_ms);
    return SR_TOUCH;
}

static int sr_lookup(struct session_conn *s, const char *hash, uint64_t now_ms, uint64_t idle_ms,
                     uint64_t max_ms, int64_t *user_id)
{
    redisReply *r = redis_sync_command(&s->r, "GET surge:s:%s", hash);
    if (!r)
        return -EIO;
    char val[80];
    uint64_t ttl = 0;
    int64_t uid = 0;
    int nil = r->type == REDIS_REPLY_NIL;
    enum sr_verdict v =
        nil ? SR_BAD : sr_value(r, now_ms, idle_ms, max_ms, &uid, val, sizeof val, &ttl);
    freeReplyObject(r);
    if (nil || v == SR_BAD)
        return -ENOENT;
    if (v == SR_EXPIRED) {
        ok_reply(redis_sync_command(&s->r, "DEL surge:s:%s", hash));
        return -ENOENT;
    }
    /* XX: a logout that ran meanwhile is not undone. Best effort: the
     * session stays valid until its current TTL anyway. */
    if (v == SR_TOUCH)
        ok_reply(redis_sync_command(&s->r, "SET surge:s:%s %s PX %" PRIu64 " XX", hash, val, ttl));
    *user_id = uid;
    return 0;
}

static int sr_remove(struct session_conn *s, const char *hash)
{
    return ok_reply(redis_sync_command(&s->r, "DEL surge:s:%s surge:sf:%s", hash, hash));
}

static int sr_fence_get(struct session_conn *s, const char *hash, char *out, size_t outlen)
{
    redisReply *r = redis_sync_command(&s->r, "MGET surge:s:%s surge:sf:%s", hash, hash);
    if (!r)
        return -EIO;
    int rc = -EIO;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        if (r->element[0]->type == REDIS_REPLY_NIL) {
            rc = -ENOENT;
        } else if (r->element[1]->type == REDIS_REPLY_STRING && r->element[1]->len < outlen) {
            memcpy(out, r->element[1]->str, r->element[1]->len);
            out[r->element[1]->len] = '\0';
            rc = 0;
        } else {
            if (outlen)
                out[0] = '\0'; /* none, or not ours: reads go by the other rules */
            rc = 0;
        }
    } else if (r->type == REDIS_REPLY_ERROR) {
        log_warn_rl("redis sessions: %s", r->str);
    }
    freeReplyObject(r);
    return rc;
}

static int sr_fence_set(struct session_conn *s, const char *hash, const char *fence)
{
    char k1[160], k2[160];
    snprintf(k1, sizeof k1, "surge:s:%s", hash);
    snprintf(k2, sizeof k2, "surge:sf:%s", hash);
    return ok_reply(redis_sync_command(&s->r, "EVAL %s 2 %s %s %s", fence_set_lua, k1, k2, fence));
}

static int sr_failures(struct session_conn *s, const char *key, uint64_t now_ms, uint64_t window_ms,
                       int add, int64_t *count, uint64_t *reset_ms)
{
    redisReply *r = redis_sync_command(&s->r, "EVAL %s 1 surge:f:%s %d %" PRIu64, failures_lua, key,
                                       add, window_ms);
    if (!r)
        return -EIO;
    int rc = -EIO;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_INTEGER && r->element[1]->type == REDIS_REPLY_INTEGER) {
        *count = r->element[0]->integer;
        *reset_ms = now_ms + (uint64_t)(r->element[1]->integer > 0 ? r->element[1]->integer : 0);
        rc = 0;
    } else if (r->type == REDIS_REPLY_ERROR) {
        log_warn_rl("redis sessions: %s", r->str);
    }
    freeReplyObject(r);
    return rc;
}

static int sr_failures_clear(struct session_conn *s, const char *key)
{
    return ok_reply(redis_sync_command(&s->r, "DEL surge:f:%s", key));
}

static int sr_purge(struct session_conn *s, uint64_t now_ms, uint64_t idle_ms, uint64_t max_ms,
                    uint64_t window_ms, unsigned batch, uint64_t *sessions, uint64_t *failures)
{
    *sessions = *failures = 0; /* Redis expires both kinds of keys itself */
    return 0;
}

static int sr_ping(struct session_conn *s)
{
    return ok_reply(redis_sync_command(&s->r, "PING"));
}

/* ---- lookups on the loop ---- */

/* Behind Sentinel, how often the loop's client asks where the primary is
 * (at once when the client is down or was refused a write): a failover
 * moves the lookups within about this long, and meanwhile they fall back
 * to the worker threads' connections, which follow the primary themselves. */
#define SESSION_LOOP_CHECK_MS 500
#define SESSION_LOOP_REASK_MS 5000

struct session_loop {
    uv_loop_t *loop;
    struct redis_async *c; /* NULL until a primary is known (Sentinel) */
    struct redis_addr addr;
    /* Sentinel only: discovery with a blocking client on libuv's thread
     * pool (never on the loop), checked by a timer. */
    int sentinel;
    struct redis_sync disc;
    uv_work_t work;
    uv_timer_t check;
    int working, stale, closing, handles;
    uint64_t asked_ms;
    struct redis_addr found; /* port 0: none */
};

struct sr_pending {
    session_lookup_cb cb;
    void *arg;
    struct session_loop *l;
    uint64_t now_ms, idle_ms, max_ms;
    int want_fence;
    char hash[SESSION_HASH_HEX + 1];
};

/* The reply of a write the lookup does on the side (expiry, touch): its
 * failure costs nothing but a log line, as in sr_lookup; a READONLY one
 * says the node is a replica now (a failover): ask Sentinel again. */
static void on_side_reply(redisReply *r, void *arg)
{
    struct session_loop *l = arg;
    if (!r || r->type != REDIS_REPLY_ERROR)
        return;
    log_warn_rl("redis sessions: %s", r->str);
    if (l->sentinel && !strncmp(r->str, "READONLY", 8))
        l->stale = 1;
}

static void on_lookup_reply(redisReply *r, void *arg)
{
    struct sr_pending *p = arg;
    const redisReply *v = r;
    const char *fence = "";
    int rc = -EIO; /* lost, late, or refused: the caller answers 503 */
    int64_t uid = 0;
    if (r && r->type == REDIS_REPLY_ERROR) {
        log_warn_rl("redis sessions: %s", r->str);
        v = NULL;
    } else if (r && p->want_fence) {
        int pair = r->type == REDIS_REPLY_ARRAY && r->elements == 2;
        v = pair ? r->element[0] : NULL;
        if (pair && r->element[1]->type == REDIS_REPLY_STRING)
            fence = r->element[1]->str; /* hiredis ends strings with a NUL */
    }
    if (v && v->type == REDIS_REPLY_NIL) {
        rc = -ENOENT;
    } else if (v) {
        char val[80];
        uint64_t ttl = 0;
        enum sr_verdict d =
            sr_value(v, p->now_ms, p->idle_ms, p->max_ms, &uid, val, sizeof val, &ttl);
        rc = d == SR_VALID || d == SR_TOUCH ? 0 : -ENOENT;
        /* Pipelined behind the GET, answered or not: not waited for. */
        if (d == SR_EXPIRED)
            redis_async_command(p->l->c, on_side_reply, p->l, "DEL surge:s:%s", p->hash);
        else if (d == SR_TOUCH)
            redis_async_command(p->l->c, on_side_reply, p->l, "SET surge:s:%s %s PX %" PRIu64 " XX",
                                p->hash, val, ttl);
    }
    p->cb(rc, rc == 0 ? uid : 0, rc == 0 ? fence : "", p->arg);
    free(p);
}

static void loop_free(struct session_loop *l)
{
    if (--l->handles > 0)
        return;
    redis_sync_free(&l->disc);
    free(l);
}

static void on_check_closed(uv_handle_t *h)
{
    loop_free(h->data);
}

/* Thread pool: ask the Sentinels afresh (redis_sync checks that the node
 * it finds calls itself a master). */
static void discover_work(uv_work_t *w)
{
    struct session_loop *l = w->data;
    redis_sync_free(&l->disc);
    l->found.port = 0;
    redisReply *r = redis_sync_command(&l->disc, "PING");
    if (r) {
        l->found = l->disc.primary;
        freeReplyObject(r);
    }
    redis_sync_free(&l->disc); /* not kept: the next question starts afresh */
}

static void discover_done(uv_work_t *w, int status)
{
    struct session_loop *l = w->data;
    int closing = l->closing;
    l->working = 0;
    loop_free(l); /* the work's reference */
    if (closing)
        return;
    if (status < 0 || !l->found.port)
        return; /* the next check asks again; lookups use the threads meanwhile */
    l->stale = 0;
    if (l->c && !strcmp(l->found.host, l->addr.host) && l->found.port == l->addr.port)
        return;
    if (l->c) {
        log_info("redis sessions: the loop's lookups move to %s:%d", l->found.host, l->found.port);
        redis_async_close(l->c);
    }
    l->addr = l->found;
    l->c = redis_async_new(l->loop, &l->addr, SESSION_REDIS_TIMEOUT_MS);
}

static void on_check(uv_timer_t *t)
{
    struct session_loop *l = t->data;
    uint64_t now = uv_now(l->loop);
    if (l->working ||
        (l->c && redis_async_ready(l->c) && !l->stale && now - l->asked_ms < SESSION_LOOP_REASK_MS))
        return;
    l->asked_ms = now;
    if (uv_queue_work(l->loop, &l->work, discover_work, discover_done) == 0) {
        l->working = 1;
        l->handles++;
    }
}

static struct session_loop *sr_loop_open(uv_loop_t *loop, const char *url)
{
    struct redis_target t;
    if (sr_parse(url, &t) < 0)
        return NULL;
    struct session_loop *l = xcalloc(1, sizeof *l);
    l->loop = loop;
    l->handles = 1;
    if (!t.sentinel) {
        l->addr = t.addrs[0];
        l->c = redis_async_new(loop, &l->addr, SESSION_REDIS_TIMEOUT_MS);
        return l;
    }
    l->sentinel = 1;
    redis_sync_init(&l->disc, &t, 0, SESSION_REDIS_TIMEOUT_MS);
    l->work.data = l;
    uv_timer_init(loop, &l->check);
    l->check.data = l;
    uv_timer_start(&l->check, on_check, 0, SESSION_LOOP_CHECK_MS);
    return l;
}

static int sr_lookup_async(struct session_loop *l, const char *hash, uint64_t now_ms,
                           uint64_t idle_ms, uint64_t max_ms, int want_fence, session_lookup_cb cb,
                           void *arg)
{
    if (!l->c || l->stale || !redis_async_ready(l->c) || strlen(hash) != SESSION_HASH_HEX)
        return -ENOTCONN;
    struct sr_pending *p = xmalloc(sizeof *p);
    *p = (struct sr_pending){.cb = cb,
                             .arg = arg,
                             .l = l,
                             .now_ms = now_ms,
                             .idle_ms = idle_ms,
                             .max_ms = max_ms,
                             .want_fence = want_fence};
    memcpy(p->hash, hash, sizeof p->hash);
    int rc = want_fence ? redis_async_command(l->c, on_lookup_reply, p,
                                              "MGET surge:s:%s surge:sf:%s", hash, hash)
                        : redis_async_command(l->c, on_lookup_reply, p, "GET surge:s:%s", hash);
    if (rc < 0) {
        free(p);
        return -ENOTCONN;
    }
    return 0;
}

static void sr_loop_close(struct session_loop *l)
{
    if (!l)
        return;
    l->closing = 1;
    if (l->c)
        redis_async_close(l->c); /* pending lookups get -EIO now */
    l->c = NULL;
    if (l->working) /* discover_done runs anyway (status UV_ECANCELED when cancelled) */
        uv_cancel((uv_req_t *)&l->work);
    if (l->sentinel)
        uv_close((uv_handle_t *)&l->check, on_check_closed);
    else
        loop_free(l);
}

/* The two URL schemes share every operation; only the name differs (the
 * redis_sync connection reads the scheme from the URL). */
#define SESSION_REDIS_OPS                                                                          \
    .takes_url = 1, .migrate = sr_migrate, .open = sr_open, .close = sr_close,                     \
    .create = sr_create, .lookup = sr_lookup, .remove = sr_remove, .failures = sr_failures,        \
    .failures_clear = sr_failures_clear, .purge = sr_purge, .ping = sr_ping,                       \
    .fence_get = sr_fence_get, .fence_set = sr_fence_set, .loop_open = sr_loop_open,               \
    .lookup_async = sr_lookup_async, .loop_close = sr_loop_close

const struct session_driver session_redis_driver = {.name = "redis", SESSION_REDIS_OPS};

const struct session_driver session_redis_sentinel_driver = {.name = "redis-sentinel",
                                                             SESSION_REDIS_OPS};
