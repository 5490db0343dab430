/* round_robin: strict rotation over the eligible set, weights ignored. */
#include <stdlib.h>

#include "base/alloc.h"
#include "lb/algo_int.h"

struct rr_state {
    uint64_t next; /* (atomic) ticket of the next pick */
};

static void *rr_create(void)
{
    return xcalloc(1, sizeof(struct rr_state));
}

static void rr_destroy(void *st)
{
    free(st);
}

static void rr_rebuild(void *st, struct backend *const *bs, size_t n)
{
    /* Nothing cached: the ticket keeps running so a set change does not send
     * a burst back to bs[0]. */
}

static struct backend *rr_pick(void *st, struct backend *const *bs, size_t n,
                               const struct lb_pick_ctx *ctx)
{
    struct rr_state *s = st;
    /* One fetch-add hands every pick a unique ticket, so picks from any
     * number of threads, taken in ticket order, form an exact cycle. Relaxed
     * is enough: only uniqueness matters, not ordering with other memory. */
    uint64_t t = __atomic_fetch_add(&s->next, 1, __ATOMIC_RELAXED);
    return bs[t % n];
}

/* Registered in lb_algos[]; state from create(), freed by destroy(). */
const struct lb_algo_ops lb_algo_round_robin = {
    .name = "round_robin",
    .create = rr_create,
    .destroy = rr_destroy,
    .rebuild = rr_rebuild,
    .pick = rr_pick,
};
