/* least_conn: fewest in-flight requests per unit of weight. */
#include <stdlib.h>

#include "base/alloc.h"
#include "lb/algo_int.h"

struct lc_state {
    uint64_t start; /* (atomic) rotating scan origin for tie-breaking */
};

static void *lc_create(void)
{
    return xcalloc(1, sizeof(struct lc_state));
}

static void lc_destroy(void *st)
{
    free(st);
}

static void lc_rebuild(void *st, struct backend *const *bs, size_t n)
{
    /* Load is read live at pick time; nothing to precompute. */
}

static struct backend *lc_pick(void *st, struct backend *const *bs, size_t n,
                               const struct lb_pick_ctx *ctx)
{
    struct lc_state *s = st;
    /* Scanning from a rotating origin and keeping the first minimum means
     * equally loaded backends (the common idle case) take turns instead of
     * bs[0] absorbing every burst before its counter moves. */
    size_t first = (size_t)(__atomic_fetch_add(&s->start, 1, __ATOMIC_RELAXED) % n);
    struct backend *best = bs[first];
    int64_t best_a = lb_active_of(best), best_w = lb_weight_of(best);

    for (size_t j = 1; j < n; j++) {
        struct backend *b = bs[(first + j) % n];
        int64_t a = lb_active_of(b), w = lb_weight_of(b);
        /* a/w < best_a/best_w, cross-multiplied: exact, and int64 cannot
         * overflow with int counters times weights <= 1000. */
        if (a * best_w < best_a * w) {
            best = b;
            best_a = a;
            best_w = w;
        }
    }
    return best;
}

/* Registered in lb_algos[]; state from create(), freed by destroy(). */
const struct lb_algo_ops lb_algo_least_conn = {
    .name = "least_conn",
    .flags = LB_ALGO_F_LOAD_AWARE,
    .create = lc_create,
    .destroy = lc_destroy,
    .rebuild = lc_rebuild,
    .pick = lc_pick,
};
