#include "lb/ratelimit.h"

#include <math.h>
#include <stdlib.h>

#include "base/alloc.h"

int ratelimit_init(struct ratelimit *r)
{
    /* calloc'd pages stay untouched (and out of RSS) until an address lands there. */
    r->slots = xcalloc(RATELIMIT_SLOTS, sizeof *r->slots);
    for (unsigned i = 0; i < RATELIMIT_LOCKS; i++)
        pthread_mutex_init(&r->locks[i], NULL);
    return 0;
}

void ratelimit_free(struct ratelimit *r)
{
    for (unsigned i = 0; i < RATELIMIT_LOCKS; i++)
        pthread_mutex_destroy(&r->locks[i]);
    free(r->slots);
    r->slots = NULL;
}

unsigned ratelimit_take(struct ratelimit *r, uint64_t key, uint64_t now_us, double rate,
                        double burst)
{
    unsigned i = (unsigned)(key & (RATELIMIT_SLOTS - 1));
    struct ratelimit_slot *s = &r->slots[i];
    pthread_mutex_t *m = &r->locks[i % RATELIMIT_LOCKS];
    unsigned wait = 0;
    pthread_mutex_lock(m);
    double refill = s->last_us ? (double)(now_us - s->last_us) * rate / 1e6 : burst;
    if (s->key != key) {
        /* A slot idle long enough to have refilled is as good as new. */
        if (!s->last_us || refill >= burst) {
            s->key = key;
            s->tokens = burst;
            refill = 0;
        }
    }
    s->tokens += refill;
    if (s->tokens > burst)
        s->tokens = burst;
    s->last_us = now_us;
    if (s->tokens >= 1.0)
        s->tokens -= 1.0;
    else
        wait = (unsigned)ceil((1.0 - s->tokens) / rate);
    pthread_mutex_unlock(m);
    return wait ? wait : 0;
}
