/* The cache: a key/value store with TTLs behind a driver interface, and the
 * cache-aside logic on top of it (docs/contract.md §6).
 *
 * Drivers (one ops table each): `local` (in-process, this file's
 * cache_local.c) today, `redis` next. Every call is blocking and
 * thread-safe: the app calls the cache from its worker threads (and, for
 * the local driver only, from the loop thread on the fast path, because a
 * local lookup never blocks).
 *
 * cache_aside() adds what a bare cache lacks:
 *  - single flight: concurrent misses on one key make one load; the others
 *    wait for it and share its result (no stampede on a cold key);
 *  - probabilistic early expiration (Vattani et al., "XFetch"): a reader may
 *    refresh a hot key a little before it expires, with a probability that
 *    grows as expiry nears and with how long the last load took, so a hot
 *    key is normally refreshed by one reader before it ever expires;
 *  - jittered TTLs (+-10%), so keys filled together do not expire together.
 * Invalidation on write is the caller's: cache_del() after the store write
 * (cache-aside) or cache_set() with the new value (write-through). */
#ifndef SURGE_DATA_CACHE_H
#define SURGE_DATA_CACHE_H
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/clock.h"

#define CACHE_KEY_MAX 200

struct cache_meta {
    uint64_t expires_ms; /* CLOCK_MONOTONIC ms (local driver) or wall ms (shared drivers) */
    uint32_t delta_ms;   /* how long the load that produced the value took */
};

struct cache_impl; /* driver state */

struct cache_driver {
    const char *name; /* URL scheme: "local" */
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
};

/* Open the driver for url ("local:"). 0, or -ENOTSUP / negative with err set. */
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
/* Store (write-through) or drop (invalidate) a key. 0 or negative. */
int cache_put(struct cache *c, const char *key, const void *val, size_t len, uint64_t ttl_ms);
int cache_del(struct cache *c, const char *key);

/* ttl_ms scaled by a random factor in [0.9, 1.1]. */
uint64_t cache_jitter_ttl(uint64_t ttl_ms);

#endif
