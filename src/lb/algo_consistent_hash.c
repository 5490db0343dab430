/* consistent_hash: Maglev hashing (Eisenbud et al., NSDI 2016).
 *
 * A lookup table of prime size M is filled by letting backends take turns
 * claiming their next preferred free slot; each backend's preference list is
 * a permutation of 0..M-1 derived from its identity alone. A pick is then a
 * single table read. Because preferences do not depend on who else is in
 * the set, adding or removing one backend changes little more than its own
 * ~1/N of the slots, while turn-taking keeps shares within a slot or so of
 * equal (far tighter than a ring with virtual nodes). */
#include <stdlib.h>

#include "base/alloc.h"
#include "lb/algo_int.h"

/* Prime, so any skip in 1..M-1 walks every slot; ~100x typical backend
 * counts, as the paper advises, for low disruption. 256 KiB per table. */
#define MAGLEV_M     65537u
#define MAGLEV_EMPTY UINT32_MAX

struct mg_state {
    /* Replaced only by rebuild() under the pool's write lock, so pick()
     * reads it under the read lock without a lock of its own. */
    uint32_t *table; /* [MAGLEV_M] index into the last rebuild's bs, or NULL */
    size_t n;
};

struct mg_perm {
    uint64_t id;    /* backend id_hash: the preference list depends on it alone */
    uint32_t index; /* position in bs */
    uint32_t pos;   /* next slot to try in this backend's permutation */
    uint32_t skip;
    int64_t weight;
    int64_t credit;
};

static void *mg_create(void)
{
    return xcalloc(1, sizeof(struct mg_state));
}

static void mg_destroy(void *st)
{
    struct mg_state *s = st;
    free(s->table);
    free(s);
}

static int mg_perm_cmp(const void *a, const void *b)
{
    const struct mg_perm *x = a, *y = b;
    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static uint32_t *mg_build(struct backend *const *bs, size_t n)
{
    struct mg_perm *p = xcalloc(n, sizeof(*p));
    uint32_t *table = xmalloc(MAGLEV_M * sizeof(*table));
    int64_t wmax = 1;

    for (size_t i = 0; i < n; i++) {
        p[i].id = bs[i]->id_hash;
        p[i].index = (uint32_t)i;
        /* Two independent hashes of the identity: offset and skip. */
        p[i].pos = (uint32_t)(lb_mix64(p[i].id ^ UINT64_C(0x6d61676c65760001)) % MAGLEV_M);
        p[i].skip =
            (uint32_t)(lb_mix64(p[i].id ^ UINT64_C(0x6d61676c65760002)) % (MAGLEV_M - 1)) + 1;
        p[i].weight = lb_weight_of(bs[i]);
        if (p[i].weight > wmax)
            wmax = p[i].weight;
    }
    /* Turn order decides contested slots; making it independent of pool
     * order means the same set always yields the same table. */
    qsort(p, n, sizeof(*p), mg_perm_cmp);

    for (uint32_t c = 0; c < MAGLEV_M; c++)
        table[c] = MAGLEV_EMPTY;

    /* Weights: each round a backend earns weight/wmax of a turn, so the
     * heaviest claims a slot every round and the others proportionally
     * less often, still interleaved (at most one claim per round each). */
    uint32_t filled = 0;
    while (filled < MAGLEV_M) {
        for (size_t i = 0; i < n && filled < MAGLEV_M; i++) {
            p[i].credit += p[i].weight;
            if (p[i].credit < wmax)
                continue;
            p[i].credit -= wmax;
            while (table[p[i].pos] != MAGLEV_EMPTY) {
                p[i].pos += p[i].skip;
                if (p[i].pos >= MAGLEV_M)
                    p[i].pos -= MAGLEV_M;
            }
            table[p[i].pos] = p[i].index;
            filled++;
        }
    }
    free(p);
    return table;
}

static void mg_rebuild(void *st, struct backend *const *bs, size_t n)
{
    struct mg_state *s = st;
    /* Build completely before swapping so the state is never half-filled. */
    uint32_t *table = n ? mg_build(bs, n) : NULL;
    uint32_t *old = s->table;

    s->table = table;
    s->n = n;
    free(old);
}

static struct backend *mg_pick(void *st, struct backend *const *bs, size_t n,
                               const struct lb_pick_ctx *ctx)
{
    const struct mg_state *s = st;

    /* A set other than the last rebuild's breaks the contract: stay safe,
     * sticky per set, but not consistent. */
    if (!s->table || s->n != n)
        return bs[ctx->key % n];
    return bs[s->table[ctx->key % MAGLEV_M]];
}

/* Registered in lb_algos[]; state from create(), freed by destroy(). */
const struct lb_algo_ops lb_algo_consistent_hash = {
    .name = "consistent_hash",
    .key = LB_ALGO_KEY_REQUEST,
    .create = mg_create,
    .destroy = mg_destroy,
    .rebuild = mg_rebuild,
    .pick = mg_pick,
};
