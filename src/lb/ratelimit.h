/* Per-client-address request rate limiting: token buckets in a fixed-size
 * table shared by every proxy thread (striped locks), so memory is constant
 * whatever the number of clients. Buckets of addresses not seen for a while
 * are recycled; two active addresses that hash to one slot share a bucket
 * (they are limited together, never more loosely). */
#ifndef SURGE_LB_RATELIMIT_H
#define SURGE_LB_RATELIMIT_H
#include <pthread.h>
#include <stdint.h>

#define RATELIMIT_SLOTS 65536u
#define RATELIMIT_LOCKS 64u

struct ratelimit_slot {
    uint64_t key;
    uint64_t last_us;
    double tokens;
};

struct ratelimit {
    struct ratelimit_slot *slots; /* RATELIMIT_SLOTS */
    pthread_mutex_t locks[RATELIMIT_LOCKS];
};

int ratelimit_init(struct ratelimit *r);
void ratelimit_free(struct ratelimit *r);
/* Take one token for `key` (a hash of the client address) at time now_us,
 * with `rate` tokens per second and a bucket of `burst`. Returns 0 when the
 * request may go, else the whole seconds to wait before one would (>= 1).
 * Thread-safe. */
unsigned ratelimit_take(struct ratelimit *r, uint64_t key, uint64_t now_us, double rate,
                        double burst);

#endif
