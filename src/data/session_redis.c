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
 * One blocking connection per worker thread (struct redis_sync): the
 * session interface is blocking and called from worker threads, where the
 * rest of /api/me's work (the user's row) happens anyway, so an async path
 * would add a hop back to the loop and save nothing. Every call is bounded
 * by SESSION_REDIS_TIMEOUT_MS; a node that is down makes calls fail at once
 * (backoff), which the app turns into 503. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
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

static int sr_lookup(struct session_conn *s, const char *hash, uint64_t now_ms, uint64_t idle_ms,
                     uint64_t max_ms, int64_t *user_id)
{
    redisReply *r = redis_sync_command(&s->r, "GET surge:s:%s", hash);
    if (!r)
        return -EIO;
    if (r->type == REDIS_REPLY_NIL) {
        freeReplyObject(r);
        return -ENOENT;
    }
    uint64_t v[3];
    size_t used;
    int ok = r->type == REDIS_REPLY_STRING && redis_parse_u64s(r->str, r->len, v, 3, &used) == 0 &&
             used == r->len && v[0] <= INT64_MAX;
    freeReplyObject(r);
    long long uid = ok ? (long long)v[0] : 0;
    unsigned long long created = ok ? v[1] : 0, seen = ok ? v[2] : 0;
    if (!ok) {
        log_warn_rl("redis sessions: a session value is not ours; treated as unknown");
        return -ENOENT;
    }
    if (now_ms >= created + max_ms || now_ms >= seen + idle_ms) {
        ok_reply(redis_sync_command(&s->r, "DEL surge:s:%s", hash));
        return -ENOENT;
    }
    if (now_ms >= seen + SESSION_TOUCH_MS || now_ms >= seen + idle_ms / 4) {
        char val[80];
        snprintf(val, sizeof val, "%lld %llu %" PRIu64, uid, created, now_ms);
        uint64_t ttl = ttl_left(now_ms, created, now_ms, idle_ms, max_ms);
        /* XX: a logout that ran meanwhile is not undone. Best effort: the
         * session stays valid until its current TTL anyway. */
        ok_reply(redis_sync_command(&s->r, "SET surge:s:%s %s PX %" PRIu64 " XX", hash, val, ttl));
    }
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

/* The two URL schemes share every operation; only the name differs (the
 * redis_sync connection reads the scheme from the URL). */
#define SESSION_REDIS_OPS                                                                          \
    .takes_url = 1, .migrate = sr_migrate, .open = sr_open, .close = sr_close,                     \
    .create = sr_create, .lookup = sr_lookup, .remove = sr_remove, .failures = sr_failures,        \
    .failures_clear = sr_failures_clear, .purge = sr_purge, .ping = sr_ping,                       \
    .fence_get = sr_fence_get, .fence_set = sr_fence_set

const struct session_driver session_redis_driver = {.name = "redis", SESSION_REDIS_OPS};

const struct session_driver session_redis_sentinel_driver = {.name = "redis-sentinel",
                                                             SESSION_REDIS_OPS};
