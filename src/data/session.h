/* The session store: sessions shared by every app process, and the failed
 * login counters that rate-limit password guessing (docs/contract.md §6).
 *
 * Drivers (one ops table each): `sqlite` (a sessions.db next to the other
 * databases), `redis` and `redis-sentinel` (session_redis.c: one Redis
 * primary shared by every instance, found directly or through Sentinel). Only a hash of a session
 * id is ever stored (SHA-256 of the 32 random bytes, hex), so a leaked store does not leak usable
 * cookies. Expiry is enforced here, server-side: a session is valid while now - last_seen < idle
 * and now - created < max; last_seen rolls forward on use (written at most every SESSION_TOUCH_MS,
 * so a busy session is not a write per request). Calls are blocking; each worker thread opens its
 * own struct session_conn. A driver whose store is across the network may also look sessions up
 * from the loop, without blocking (loop_open, lookup_async). Times are wall-clock ms (shared by
 * processes). */
#ifndef SURGE_DATA_SESSION_H
#define SURGE_DATA_SESSION_H
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define SESSION_HASH_HEX 64
#define SESSION_TOUCH_MS 15000

struct session_conn;
struct session_loop;

/* A lookup's answer on the loop (lookup_async): rc 0 with user_id and
 * fence (the session's read fence, as fence_get gives it: "" when it has
 * none or none was asked for), -ENOENT (unknown or expired), or -EIO (the
 * store did not answer in time). */
typedef void (*session_lookup_cb)(int rc, int64_t user_id, const char *fence, void *arg);

struct session_driver {
    const char *name; /* URL scheme */
    /* 1: migrate and open take the --sessions URL itself; 0: the path of
     * the layout's sessions database (store_layout). */
    int takes_url;
    /* Create or upgrade the schema at location (once per process start);
     * a URL driver only checks the URL (a server that is down is not an
     * error: /readyz reports it). */
    int (*migrate)(const char *location, char *err, size_t errlen);
    /* A connection for the calling thread; NULL on failure (logged). */
    struct session_conn *(*open)(const char *location);
    void (*close)(struct session_conn *s);
    /* Store a new session (hash = 64 hex chars) that lookup will treat
     * with these idle_ms and max_ms bounds (a driver with TTLs sets them
     * now). 0 or negative. */
    int (*create)(struct session_conn *s, const char *hash, int64_t user_id, uint64_t now_ms,
                  uint64_t idle_ms, uint64_t max_ms);
    /* The user of a valid session: 0 and *user_id; -ENOENT when unknown or
     * expired (an expired one is deleted). Rolls last_seen forward. */
    int (*lookup)(struct session_conn *s, const char *hash, uint64_t now_ms, uint64_t idle_ms,
                  uint64_t max_ms, int64_t *user_id);
    /* Delete a session (0 even when it did not exist). */
    int (*remove)(struct session_conn *s, const char *hash);
    /* Failed-login counter for key in fixed windows of window_ms. add is a
     * delta: 1 counts an attempt, -1 refunds one (the count never goes
     * below 0), 0 only reads. Adding and reading the new count are one
     * atomic step (concurrent callers in any thread or process each get a
     * distinct count), so "count, then verify only if within the limit"
     * cannot be raced past the limit. *count receives the count in the
     * current window and *reset_ms when it ends. */
    int (*failures)(struct session_conn *s, const char *key, uint64_t now_ms, uint64_t window_ms,
                    int add, int64_t *count, uint64_t *reset_ms);
    /* Forget a key's failures (after a successful login). */
    int (*failures_clear)(struct session_conn *s, const char *key);
    /* Delete at most batch expired sessions (unused for idle_ms or older
     * than max_ms) and at most batch failure counters whose window_ms
     * window is over; *sessions and *failures receive how many went.
     * Background housekeeping: a caller repeats while a batch comes back
     * full. 0 or negative. */
    int (*purge)(struct session_conn *s, uint64_t now_ms, uint64_t idle_ms, uint64_t max_ms,
                 uint64_t window_ms, unsigned batch, uint64_t *sessions, uint64_t *failures);
    /* Read-your-writes across processes (optional; NULL when the driver
     * has none, and the app then reads a session's data from primaries):
     * the session's store fence (store_conns_fence text), kept with the
     * session so every process honours it. fence_get: 0 and out ("" when
     * none), -ENOENT for an unknown session. fence_set: 0 or negative. */
    int (*fence_get)(struct session_conn *s, const char *hash, char *out, size_t outlen);
    int (*fence_set)(struct session_conn *s, const char *hash, const char *fence);
    /* 0 when the store answers now (/readyz); NULL: having a connection
     * is enough (an embedded file). */
    int (*ping)(struct session_conn *s);
    /* Optional (NULL: every call runs on worker threads): lookups on a
     * libuv loop, for a store across the network, so the request's worker
     * thread never blocks on them and the loop's lookups share one
     * pipelined connection. Loop thread only. loop_open: a client, or NULL
     * when this location has none (the caller uses lookup). lookup_async
     * does what lookup (and, when want_fence, fence_get) does: 0 and cb is
     * called exactly once, later; -ENOTCONN when it cannot now (cb is not
     * called: use lookup). loop_close: pending callbacks get -EIO now; run
     * the loop afterwards so its handles close. */
    struct session_loop *(*loop_open)(uv_loop_t *loop, const char *location);
    int (*lookup_async)(struct session_loop *l, const char *hash, uint64_t now_ms, uint64_t idle_ms,
                        uint64_t max_ms, int want_fence, session_lookup_cb cb, void *arg);
    void (*loop_close)(struct session_loop *l);
};

/* The driver for url ("sqlite:", "redis://...", "redis-sentinel://..."),
 * or NULL. */
const struct session_driver *session_driver_find(const char *url);

#endif
