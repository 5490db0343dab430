/* Load-balancing algorithms: one file each (algo_<name>.c), each filling a
 * `const struct lb_algo_ops`, registered in the explicit array in algo.c.
 *
 * The pool owns the list of eligible backends (state up, weight >= 1) and
 * calls rebuild() whenever that list or a weight changes, holding its write
 * lock, so no pick() runs at the same time. pick() runs concurrently on every
 * proxy thread under the pool's read lock: any state it changes must be
 * atomic or guarded by the algorithm's own lock. */
#ifndef SURGE_LB_ALGO_H
#define SURGE_LB_ALGO_H
#include <stddef.h>
#include <stdint.h>

#include "lb/backend.h"

struct lb_pick_ctx {
    uint64_t key; /* lb_hash64 of the request key (see lb_algo_ops.key); 0 when
                     the algorithm takes none */
    uint64_t rnd; /* 64 fresh random bits from the calling thread's generator */
};

/* What a request's key is for an algorithm that hashes one (lb_algo_ops.key). */
enum lb_algo_key {
    LB_ALGO_KEY_NONE = 0,   /* ctx->key is unused */
    LB_ALGO_KEY_CLIENT = 1, /* the client's address (X-Forwarded-For with --trust-forwarded) */
    LB_ALGO_KEY_REQUEST = 2 /* the --hash-key value (ip, header:NAME, cookie:NAME, path) */
};

/* lb_algo_ops.flags. */
#define LB_ALGO_F_LOAD_AWARE 0x1u /* pick() weighs in-flight requests (active / weight) */

struct lb_algo_ops {
    const char *name; /* the --algorithm value */
    /* Properties the pool and the proxy act on (never the name):
     * key: a keyed algorithm maps equal keys to the same backend while the
     *   eligible set is unchanged, so the pool keeps that choice (slow start
     *   never diverts it); the proxy computes ctx->key only for these.
     * flags LB_ALGO_F_LOAD_AWARE: when the chosen backend is at its
     *   --backend-max-conns cap, the pool spills to the least loaded backend
     *   with room (what the algorithm would have chosen among those), not to
     *   the next one in pool order. */
    enum lb_algo_key key;
    unsigned flags;
    /* Allocate the algorithm's state (never NULL: aborts on OOM). */
    void *(*create)(void);
    void (*destroy)(void *st);
    /* The eligible set is now bs[0..n) (n may be 0), in pool order. Weights
     * are read with backend_weight(). Called under the pool's write lock. */
    void (*rebuild)(void *st, struct backend *const *bs, size_t n);
    /* Choose one of bs[0..n), n >= 1, the array last given to rebuild.
     * Returns an element of bs, never NULL. Thread-safe. */
    struct backend *(*pick)(void *st, struct backend *const *bs, size_t n,
                            const struct lb_pick_ctx *ctx);
};

/* NULL-terminated list of every algorithm, in documentation order. */
extern const struct lb_algo_ops *const lb_algos[];

/* Find an algorithm by name. NULL if unknown. */
const struct lb_algo_ops *lb_algo_find(const char *name);

/* A fast, well-mixed 64-bit hash of n bytes (stable across runs and builds:
 * hashing algorithms rely on it for stickiness). */
uint64_t lb_hash64(const void *data, size_t n);

#endif
