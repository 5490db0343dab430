/* random: pick a backend with probability weight / sum(weights). */
#include <stdlib.h>

#include "base/alloc.h"
#include "lb/algo_int.h"

struct rnd_state {
    /* Written only by rebuild() under the pool's write lock, so pick() reads
     * it under the read lock without any lock of its own. */
    uint64_t *upto; /* [n] prefix sums: upto[i] = w[0] + ... + w[i] */
    size_t n;
};

static void *rnd_create(void)
{
    return xcalloc(1, sizeof(struct rnd_state));
}

static void rnd_destroy(void *st)
{
    struct rnd_state *s = st;
    free(s->upto);
    free(s);
}

static void rnd_rebuild(void *st, struct backend *const *bs, size_t n)
{
    struct rnd_state *s = st;
    uint64_t sum = 0;

    free(s->upto);
    s->upto = n ? xmalloc(n * sizeof(*s->upto)) : NULL;
    for (size_t i = 0; i < n; i++) {
        sum += (uint64_t)lb_weight_of(bs[i]);
        s->upto[i] = sum;
    }
    s->n = n;
}

static struct backend *rnd_pick(void *st, struct backend *const *bs, size_t n,
                                const struct lb_pick_ctx *ctx)
{
    const struct rnd_state *s = st;

    /* A caller passing a set other than the last rebuild's breaks the
     * contract; stay safe and merely unweighted. */
    if (s->n != n)
        return bs[ctx->rnd % n];

    /* 64 random bits modulo a total of at most n * 1000: bias < 2^-40. */
    uint64_t r = ctx->rnd % s->upto[n - 1];
    /* First i with upto[i] > r: backend i owns [upto[i-1], upto[i]). */
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->upto[mid] > r)
            hi = mid;
        else
            lo = mid + 1;
    }
    return bs[lo];
}

/* Registered in lb_algos[]; state from create(), freed by destroy(). */
const struct lb_algo_ops lb_algo_random = {
    .name = "random",
    .create = rnd_create,
    .destroy = rnd_destroy,
    .rebuild = rnd_rebuild,
    .pick = rnd_pick,
};
