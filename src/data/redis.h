/* Redis: what every Redis driver shares that needs no socket — URLs, the
 * reconnect backoff, and how keys are spread over nodes. The connections
 * live in redis_sync.h (blocking, one per worker thread) and redis_async.h
 * (on a libuv loop, pipelined). docs/contract.md §9 has the URL forms:
 *
 *   redis://HOST:PORT[,redis://HOST:PORT...]    nodes (several: a cache)
 *   redis-sentinel://HOST:PORT[,HOST:PORT...]/MASTER
 *                                               ask these Sentinels where
 *                                               the primary named MASTER is
 *
 * HOST is an IPv4 address or a name; PORT 1-65535. No user, password, path
 * or query (refused, so a typo is not silently ignored). */
#ifndef SURGE_DATA_REDIS_H
#define SURGE_DATA_REDIS_H
#include <stddef.h>
#include <stdint.h>

#define REDIS_MAX_NODES   16
#define REDIS_HOST_MAX    255
#define REDIS_MASTER_MAX  64
#define REDIS_BACKOFF_MIN 50   /* ms: first reconnect delay's upper bound */
#define REDIS_BACKOFF_MAX 2000 /* ms: cap of the delay's upper bound */

struct redis_addr {
    char host[REDIS_HOST_MAX + 1];
    int port;
};

struct redis_target {
    int sentinel;  /* 1: addrs are Sentinels; master names the primary */
    size_t naddrs; /* 1..REDIS_MAX_NODES */
    struct redis_addr addrs[REDIS_MAX_NODES];
    char master[REDIS_MASTER_MAX + 1];
};

/* Parse url into *t. 0, or -EINVAL with a one-line reason in err (the URL
 * is not quoted back: the caller names the flag). */
int redis_target_parse(const char *url, struct redis_target *t, char *err, size_t errlen);

/* "full jitter" backoff (AWS architecture blog, 2015): a delay drawn
 * uniformly from [0, min(REDIS_BACKOFF_MAX, REDIS_BACKOFF_MIN << attempt)],
 * attempt counting failures in a row from 0. rnd is a uniform random
 * 64-bit value (the caller's generator; tests pass fixed ones). */
uint64_t redis_backoff_ms(unsigned attempt, uint64_t rnd);

/* A 64-bit hash of bytes (FNV-1a, then a murmur-style finaliser so
 * neighbouring keys land far apart). */
uint64_t redis_hash(const void *p, size_t n, uint64_t seed);

/* Rendezvous (highest random weight) hashing, a form of consistent
 * hashing: key goes to the node whose hash(node id, key) is highest. A
 * node's id is its "host:port", so the choice depends on the node set
 * alone, not on the order of the list; adding a node moves exactly the
 * keys the new node wins (about 1/(n+1)) and removing one moves only its
 * own keys. Returns the index in t->addrs (0 when naddrs == 1). */
size_t redis_pick_node(const struct redis_target *t, const char *key, size_t keylen);

/* Parse k unsigned decimal numbers separated by single spaces at the start
 * of s[0..n) (what our drivers store in values and messages; the bytes come
 * from Redis, so they are checked, not trusted). Each number has 1-19
 * digits. The k-th number must end at n, or at a '\n' or ' ' (then
 * *used is the offset just past that byte; else n). 0, or -EINVAL. */
int redis_parse_u64s(const char *s, size_t n, uint64_t *out, size_t k, size_t *used);

/* A per-thread xorshift generator seeded from the clock and the thread;
 * never 0. For jitter only (not cryptographic). */
uint64_t redis_random(void);

#endif
