/* weighted_round_robin: smooth weighted round robin (the nginx scheme).
 * Each pick adds every backend's weight to its running `current`, takes the
 * largest, and charges it the total. Over one cycle of sum(weights) picks
 * each backend is chosen exactly weight times, interleaved rather than in
 * bursts: 5:1:1 gives a a b a c a a. */
#include <pthread.h>
#include <stdlib.h>

#include "base/alloc.h"
#include "lb/algo_int.h"

struct swrr_entry {
    struct backend *b;
    int64_t current;
};

struct swrr_state {
    /* Every pick rewrites every `current`: no lock-free shortcut exists, and
     * the critical section is a short scan. */
    pthread_mutex_t lock;
    struct swrr_entry *ent; /* [n], same order as the pool's bs */
    size_t n;
};

static void *swrr_create(void)
{
    struct swrr_state *s = xcalloc(1, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    return s;
}

static void swrr_destroy(void *st)
{
    struct swrr_state *s = st;
    pthread_mutex_destroy(&s->lock);
    free(s->ent);
    free(s);
}

static void swrr_rebuild(void *st, struct backend *const *bs, size_t n)
{
    struct swrr_state *s = st;
    struct swrr_entry *ent = n ? xcalloc(n, sizeof(*ent)) : NULL;

    /* The pool's write lock already excludes pick(); taking ours too costs
     * nothing on this rare path and keeps the state self-consistent even
     * for a caller that does not hold it. */
    pthread_mutex_lock(&s->lock);
    /* Backends that stay keep their place in the cycle, so a weight change
     * or a neighbour leaving does not reset everyone's credit and cause a
     * burst; newcomers start neutral. Quadratic, but only on set changes. */
    for (size_t i = 0; i < n; i++) {
        ent[i].b = bs[i];
        for (size_t j = 0; j < s->n; j++) {
            if (s->ent[j].b == bs[i]) {
                ent[i].current = s->ent[j].current;
                break;
            }
        }
    }
    free(s->ent);
    s->ent = ent;
    s->n = n;
    pthread_mutex_unlock(&s->lock);
}

static struct backend *swrr_pick(void *st, struct backend *const *bs, size_t n,
                                 const struct lb_pick_ctx *ctx)
{
    struct swrr_state *s = st;
    struct backend *chosen = bs[0];

    pthread_mutex_lock(&s->lock);
    /* A set other than the last rebuild's breaks the contract; returning
     * bs[0] then at least returns a member of the caller's set. */
    if (s->n == n) {
        struct swrr_entry *best = NULL;
        int64_t total = 0;
        for (size_t i = 0; i < s->n; i++) {
            struct swrr_entry *e = &s->ent[i];
            /* Weight is read live so a change lands at the next pick even
             * before the pool's rebuild. */
            int64_t w = lb_weight_of(e->b);
            e->current += w;
            total += w;
            if (!best || e->current > best->current)
                best = e;
        }
        best->current -= total;
        chosen = best->b;
    }
    pthread_mutex_unlock(&s->lock);
    return chosen;
}

/* Registered in lb_algos[]; state from create(), freed by destroy(). */
const struct lb_algo_ops lb_algo_weighted_round_robin = {
    .name = "weighted_round_robin",
    .create = swrr_create,
    .destroy = swrr_destroy,
    .rebuild = swrr_rebuild,
    .pick = swrr_pick,
};
