/* The cache: a key/value store with TTLs behind a driver interface, and the
 * cache-aside logic on top of it (docs/contract.md §6).
 *
 * Drivers (one ops table each): `local` (in-process, cache_local.c) and
 * `redis` (cache_redis.c: nodes shared by every instance). Every call is
 * blocking and thread-safe: the app calls the cache from its worker threads,
 * and cache_peek() from the loop thread on the fast path, which only ever
 * reads the local level (a local lookup never blocks).
 *
 * Two levels: in front of a shared driver (one whose values other
 * processes write) sits a local cache for the hottest keys, whose copies
 * live at most CACHE_L1_TTL_MS. A write (cache_put, cache_del) goes to the
 * shared level and is announced to every other instance, which drops its
 * local copy when the announcement arrives (Redis pub/sub, received on the
 * loop: cache_attach_loop). So another instance sees a write within the
 * announcement's delivery (milliseconds), and within CACHE_L1_TTL_MS even
 * if the announcement is lost (a subscriber's connection breaking). While
 * no subscription is up (at start, or every node's subscriber
 * reconnecting), no local copy is made: reads go to the shared level.
 *
 * cache_aside() adds what a bare cache lacks:
 *  - single flight: concurrent misses on one key make one load; the others
 *    wait for it and share its result (no stampede on a cold key);
 *  - probabilistic early expiration (Vattani et al., "XFetch"): a reader may
 *    refresh a hot key a little before it expires, with a probability that
 *    grows as expiry nears and with how long the last load took, so a hot
 *    key is normally refreshed by one reader before it ever expires;
 *  - jittered TTLs (+-10%), so keys filled together do not expire together;
 *  - with a shared driver, single flight across processes too: the loader
 *    takes a short lock key (CACHE_LOCK_MS); another process that misses
 *    the same key meanwhile waits for the value to appear instead of
 *    loading it (or, holding a still-valid copy, serves that), and loads
 *    itself only if the lock's holder has not filled it in CACHE_LOCK_MS.
 * Invalidation on write is the caller's: cache_del() after the store write
 * (cache-aside) or cache_set() with the new value (write-through). */
#ifndef SURGE_DATA_CACHE_H
#define SURGE_DATA_CACHE_H
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "base/buf.h"
#include "base/clock.h"

#define CACHE_KEY_MAX   200
#define CACHE_L1_TTL_MS 1000 /* a local copy of a shared value lives at most this */
#define CACHE_LOCK_MS   2000 /* the cross-process single-flight lock */

struct cache_meta {
    uint64_t expires_ms; /* CLOCK_MONOTONIC ms (local driver) or wall ms (shared drivers) */
    uint32_t delta_ms;   /* how long the load that produced the value took */
};

struct cache_impl; /* driver state */

/* Another instance changed key (loop thread). */
typedef void (*cache_invalidate_fn)(const char *key, void *arg);
/* An asynchronous read's result (loop thread): rc 0 with the value (valid
 * during the call only) and its meta, or -ENOENT (a miss, or the node did
 * not answer). */
typedef void (*cache_get_cb)(int rc, const char *val, size_t len, const struct cache_meta *meta,
                             void *arg);

struct cache_driver {
    const char *name; /* URL scheme: "local", "redis" */
    /* 1: other processes share the values (calls may wait on the network;
     * expires_ms is wall-clock): cache.c puts a local level in front and
     * uses the optional calls below. */
    int shared;
    /* max_bytes caps the memory the driver may use for values (local). */
    int (*open)(const char *url, size_t max_bytes, struct cache_impl **out, char *err,
                size_t errlen);
    void (*close)(struct cache_impl *c);
    /* 0 and the value appended to out (and *meta) on a hit; -ENOENT on a
     * miss or an expired entry. */
    int (*get)(struct cache_impl *c, const char *key, struct buf *out, struct cache_meta *meta);
    int (*set)(struct cache_impl *c, const char *key, const void *val, size_t len, uint64_t ttl_ms,
               uint32_t delta_ms);
    int (*del)(struct cache_impl *c, const char *key);
    /* Shared drivers only. Take key's load lock for ttl_ms: 1 taken, 0 held
     * by another loader, negative when the node cannot tell (load anyway). */
    int (*lock)(struct cache_impl *c, const char *key, uint64_t ttl_ms);
    void (*unlock)(struct cache_impl *c, const char *key);
    /* Tell every other instance that key changed; with del, also delete
     * the shared copy, in the same round trip. 0 or negative. */
    int (*publish)(struct cache_impl *c, const char *key, int del);
    /* Start receiving other instances' changes on loop (loop thread); fn
     * runs there. detach stops it; the loop then closes its handles. */
    int (*attach)(struct cache_impl *c, uv_loop_t *loop, cache_invalidate_fn fn, void *arg);
    void (*detach)(struct cache_impl *c);
    /* Loop thread, once attached: start a read that never blocks. 0: cb
     * runs later, exactly once; negative (not connected now): cb never
     * runs. */
    int (*get_async)(struct cache_impl *c, const char *key, cache_get_cb cb, void *arg);
    /* 1 while another instance's writes would reach us (the invalidation
     * subscription is up): only then may cache.c keep local copies. */
    int (*local_ok)(struct cache_impl *c);
};

/* Outcome of a cache_aside call, for the hit/miss/stale counters. */
enum cache_outcome { CACHE_HIT = 0, CACHE_MISS, CACHE_STALE, CACHE_WAITED };

/* Loads the value of key from the store into out. 0, -ENOENT (no such
 * item: not cached), or another negative error (not cached). */
typedef int (*cache_load_fn)(void *arg, const char *key, struct buf *out);

struct cache_flight; /* one load in progress */

struct cache {
    const struct cache_driver *driver;
    struct cache_impl *impl;
    double beta; /* XFetch aggressiveness, 1.0 by default */
    pthread_mutex_t mu;
    struct cache_flight *flights; /* loads in progress */
    struct cache_impl *l1;        /* the local level in front of a shared driver, or NULL */
    uint64_t l1_ttl_ms;
    uint64_t invalidations; /* other instances' writes received (atomic) */
    uint64_t async_hits;    /* cache_peek_async hits on the shared level (atomic) */
};

/* Open the driver for url ("local:", "redis://H:P[,redis://H:P...]"); a
 * shared driver gets a local level of max_bytes in front. 0, or -ENOTSUP /
 * negative with err set (a node that is down is not an error: misses). */
int cache_open(struct cache *c, const char *url, size_t max_bytes, char *err, size_t errlen);
void cache_close(struct cache *c);

/* Read key through the cache: a fresh hit is appended to out; a miss (or
 * an early refresh chosen by XFetch) loads with load(arg, key, out) and
 * stores the result for ttl_ms (jittered), one load per key at a time.
 * Returns load's result on a load, 0 on a hit; *outcome says which. */
int cache_aside(struct cache *c, const char *key, struct buf *out, uint64_t ttl_ms,
                cache_load_fn load, void *arg, enum cache_outcome *outcome);
/* A hit only, never a load: 0 with the value in out when key is fresh and
 * XFetch does not ask for a refresh; -ENOENT otherwise. */
int cache_peek(struct cache *c, const char *key, struct buf *out);
/* The loop's read: cache_peek, then, with a shared driver attached to the
 * loop, the shared level without blocking (a value found there is kept
 * locally too). 0: a hit now, in out. 1: cb(0 or -ENOENT, value, len, arg)
 * runs later on the loop, exactly once. -ENOENT: a miss now (cb never
 * runs). Loop thread only. */
typedef void (*cache_peek_cb)(int rc, const char *val, size_t len, void *arg);
int cache_peek_async(struct cache *c, const char *key, struct buf *out, cache_peek_cb cb,
                     void *arg);
/* Store (write-through) or drop (invalidate) a key. 0 or negative. */
int cache_put(struct cache *c, const char *key, const void *val, size_t len, uint64_t ttl_ms);
int cache_del(struct cache *c, const char *key);

/* Receive other instances' invalidations on loop (a no-op for a local
 * cache). Loop thread; detach before the loop's last run. 0 or negative. */
int cache_attach_loop(struct cache *c, uv_loop_t *loop);
void cache_detach_loop(struct cache *c);

/* ttl_ms scaled by a random factor in [0.9, 1.1]. */
uint64_t cache_jitter_ttl(uint64_t ttl_ms);

#endif
