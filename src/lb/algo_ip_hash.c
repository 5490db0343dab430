/* ip_hash: weighted rendezvous (highest random weight) hashing. Every
 * backend scores the key with an independent pseudo-random draw; the best
 * score wins. A key only changes hands when its winner leaves or a newcomer
 * outscores it, so adding or removing a backend moves just that backend's
 * share of keys, and nothing else ever moves. O(n) per pick, no table. */
#include <math.h>
#include <stdlib.h>

#include "base/alloc.h"
#include "lb/algo_int.h"

struct iph_state {
    /* Written only by rebuild() under the pool's write lock; pick() reads
     * it under the read lock without a lock of its own. */
    double *weight; /* [n], as of the last rebuild */
    size_t n;
    int uniform; /* all weights equal: scores reduce to raw hash order */
};

static void *iph_create(void)
{
    return xcalloc(1, sizeof(struct iph_state));
}

static void iph_destroy(void *st)
{
    struct iph_state *s = st;
    free(s->weight);
    free(s);
}

static void iph_rebuild(void *st, struct backend *const *bs, size_t n)
{
    struct iph_state *s = st;

    free(s->weight);
    s->weight = n ? xmalloc(n * sizeof(*s->weight)) : NULL;
    s->uniform = 1;
    for (size_t i = 0; i < n; i++) {
        s->weight[i] = (double)lb_weight_of(bs[i]);
        if (s->weight[i] != s->weight[0])
            s->uniform = 0;
    }
    s->n = n;
}

static struct backend *iph_pick(void *st, struct backend *const *bs, size_t n,
                                const struct lb_pick_ctx *ctx)
{
    const struct iph_state *s = st;
    size_t best = 0;

    /* A set other than the last rebuild's breaks the contract: still
     * sticky, only unweighted. */
    if (s->uniform || s->n != n) {
        /* -w/ln(u) is increasing in u for a fixed w, so with equal weights
         * the largest hash wins: skip the logarithms. */
        uint64_t top = 0;
        for (size_t i = 0; i < n; i++) {
            uint64_t h = lb_mix64(ctx->key ^ bs[i]->id_hash);
            if (i == 0 || h > top) {
                top = h;
                best = i;
            }
        }
        return bs[best];
    }

    double top = 0.0;
    for (size_t i = 0; i < n; i++) {
        uint64_t h = lb_mix64(ctx->key ^ bs[i]->id_hash);
        /* u uniform in the open interval (0,1): 53 bits, offset half a step
         * so neither 0 (log -inf) nor 1 (division by zero) occurs. Then
         * -w/ln(u) is distributed so that the maximum lands on backend i
         * with probability exactly w_i / sum(w). */
        double u = ((double)(h >> 11) + 0.5) * 0x1p-53;
        double score = s->weight[i] / -log(u);
        if (i == 0 || score > top) {
            top = score;
            best = i;
        }
    }
    return bs[best];
}

/* Registered in lb_algos[]; state from create(), freed by destroy(). */
const struct lb_algo_ops lb_algo_ip_hash = {
    .name = "ip_hash",
    .key = LB_ALGO_KEY_CLIENT,
    .create = iph_create,
    .destroy = iph_destroy,
    .rebuild = iph_rebuild,
    .pick = iph_pick,
};
