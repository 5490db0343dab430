/* p2c: power of two choices. Sample two distinct backends at random and
 * take the less loaded (active / weight). Nearly as good as least_conn at
 * spreading load, without a full scan or a herd on the single minimum when
 * many threads see the same stale counters. Stateless. */
#include <stdlib.h>

#include "base/alloc.h"
#include "lb/algo_int.h"

static void *p2c_create(void)
{
    /* No state, but create() must return a distinct non-NULL pointer that
     * destroy() can free like any other algorithm's. */
    return xcalloc(1, 1);
}

static void p2c_destroy(void *st)
{
    free(st);
}

static void p2c_rebuild(void *st, struct backend *const *bs, size_t n)
{
}

static struct backend *p2c_pick(void *st, struct backend *const *bs, size_t n,
                                const struct lb_pick_ctx *ctx)
{
    if (n == 1)
        return bs[0];
    size_t i = lb_range32((uint32_t)(ctx->rnd >> 32), n);
    /* Draw from the n - 1 others and skip over i: distinct, still uniform. */
    size_t j = lb_range32((uint32_t)ctx->rnd, n - 1);
    if (j >= i)
        j++;

    struct backend *a = bs[i], *b = bs[j];
    /* b wins only if strictly better: active_b/w_b < active_a/w_a. */
    if (lb_active_of(b) * lb_weight_of(a) < lb_active_of(a) * lb_weight_of(b))
        return b;
    return a;
}

/* Registered in lb_algos[]; stateless (create() returns a 1-byte placeholder). */
const struct lb_algo_ops lb_algo_p2c = {
    .name = "p2c",
    .flags = LB_ALGO_F_LOAD_AWARE,
    .create = p2c_create,
    .destroy = p2c_destroy,
    .rebuild = p2c_rebuild,
    .pick = p2c_pick,
};
