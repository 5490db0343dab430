/* Unit tests for the load-balancing algorithms (src/lb/algo*.c), on fake
 * backends: only address, id_hash, weight and active matter to them. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lb/algo.h"
#include "lb/lb.h"

#define MAXB 8

struct fixture {
    struct backend b[MAXB];
    struct backend *p[MAXB];
    size_t n;
};

static void fx_init(struct fixture *fx, size_t n, const int *weights)
{
    memset(fx, 0, sizeof(*fx));
    for (size_t i = 0; i < MAXB; i++) {
        struct backend *b = &fx->b[i];
        snprintf(b->address, sizeof(b->address), "10.0.0.%zu:8080", i + 1);
        b->id_hash = lb_hash64(b->address, strlen(b->address));
        b->id = (unsigned)i;
        b->weight = weights ? weights[i < n ? i : 0] : 1;
        fx->p[i] = b;
    }
    fx->n = n;
}

static const struct lb_algo_ops *algo(const char *name)
{
    const struct lb_algo_ops *ops = lb_algo_find(name);
    cr_assert_not_null(ops, "algorithm %s not registered", name);
    return ops;
}

/* Deterministic generator for ctx->rnd (splitmix64). */
static uint64_t next_rnd(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static struct backend *pick_key(const struct lb_algo_ops *ops, void *st, struct backend *const *bs,
                                size_t n, uint64_t key, uint64_t rnd)
{
    struct lb_pick_ctx ctx = {.key = key, .rnd = rnd};
    struct backend *b = ops->pick(st, bs, n, &ctx);
    cr_assert_not_null(b);
    return b;
}

static size_t index_of(struct backend *const *bs, size_t n, const struct backend *b)
{
    for (size_t i = 0; i < n; i++)
        if (bs[i] == b)
            return i;
    cr_assert_fail("picked %s which is not in the set", b->address);
    return 0;
}

/* Key of the i-th synthetic client, hashed as the proxy would. */
static uint64_t client_key(size_t i)
{
    char ip[32];
    int len =
        snprintf(ip, sizeof(ip), "192.168.%zu.%zu", (i / 256) % 256, i % 256 + 1000 * (i / 65536));
    return lb_hash64(ip, (size_t)len);
}

/* ---- registry and hash ------------------------------------------------ */

Test(algo, find_every_name)
{
    static const char *const names[] = {
        "round_robin", "least_conn",      "ip_hash", "weighted_round_robin",
        "p2c",         "consistent_hash", "random"};
    size_t i;
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const struct lb_algo_ops *ops = lb_algo_find(names[i]);
        cr_assert_not_null(ops, "%s", names[i]);
        cr_assert_str_eq(ops->name, names[i]);
        cr_assert_eq(lb_algos[i], ops, "lb_algos[%zu] out of order", i);
    }
    cr_assert_null(lb_algos[i], "lb_algos not NULL-terminated after %zu", i);
    cr_assert_null(lb_algo_find("roundrobin"));
    cr_assert_null(lb_algo_find(""));
    cr_assert_null(lb_algo_find("ROUND_ROBIN"));
    cr_assert_null(lb_algo_find(NULL));
}

Test(algo, hash_stable_and_mixed)
{
    cr_assert_eq(lb_hash64("abc", 3), lb_hash64("abc", 3));
    cr_assert_neq(lb_hash64("abc", 3), lb_hash64("abd", 3));
    cr_assert_neq(lb_hash64("", 0), lb_hash64("\0", 1));
    /* Avalanche: one input bit flips about half the output bits. */
    int total = 0;
    for (int i = 0; i < 256; i++) {
        unsigned char a[4] = {(unsigned char)i, 1, 2, 3}, b[4] = {(unsigned char)(i ^ 1), 1, 2, 3};
        total += __builtin_popcountll(lb_hash64(a, 4) ^ lb_hash64(b, 4));
    }
    double avg = total / 256.0;
    cr_assert(avg > 28 && avg < 36, "average flipped bits %f", avg);
}

/* ---- round_robin ------------------------------------------------------ */

Test(round_robin, exact_cycle)
{
    struct fixture fx;
    fx_init(&fx, 3, (const int[]){5, 1, 1});
    const struct lb_algo_ops *ops = algo("round_robin");
    void *st = ops->create();
    ops->rebuild(st, fx.p, 3);
    for (int i = 0; i < 9; i++) {
        struct backend *b = pick_key(ops, st, fx.p, 3, 0, 0);
        cr_assert_eq(b, fx.p[i % 3], "pick %d: got %s", i, b->address);
    }
    ops->destroy(st);
}

struct rr_thread {
    const struct lb_algo_ops *ops;
    void *st;
    struct backend *const *bs;
    size_t n;
    size_t counts[MAXB];
};

#define RR_PICKS 30000

static void *rr_worker(void *arg)
{
    struct rr_thread *t = arg;
    struct lb_pick_ctx ctx = {0, 0};
    for (int i = 0; i < RR_PICKS; i++) {
        struct backend *b = t->ops->pick(t->st, t->bs, t->n, &ctx);
        t->counts[b - t->bs[0]]++;
    }
    return NULL;
}

Test(round_robin, concurrent_cycle)
{
    struct fixture fx;
    fx_init(&fx, 3, NULL);
    const struct lb_algo_ops *ops = algo("round_robin");
    void *st = ops->create();
    ops->rebuild(st, fx.p, 3);

    struct rr_thread t[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        memset(&t[i], 0, sizeof(t[i]));
        t[i].ops = ops;
        t[i].st = st;
        t[i].bs = fx.p;
        t[i].n = 3;
        cr_assert_eq(pthread_create(&th[i], NULL, rr_worker, &t[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    /* Every pick took a unique ticket: 2 * 30000 picks split exactly. */
    for (size_t j = 0; j < 3; j++)
        cr_assert_eq(t[0].counts[j] + t[1].counts[j], 2 * RR_PICKS / 3, "backend %zu got %zu", j,
                     t[0].counts[j] + t[1].counts[j]);
    /* And the next picks continue the cycle where the threads left it. */
    struct backend *first = pick_key(ops, st, fx.p, 3, 0, 0);
    for (int i = 1; i < 6; i++) {
        struct backend *b = pick_key(ops, st, fx.p, 3, 0, 0);
        cr_assert_eq(b, fx.p[(index_of(fx.p, 3, first) + (size_t)i) % 3]);
    }
    ops->destroy(st);
}

/* ---- weighted_round_robin --------------------------------------------- */

static void swrr_seq(const struct lb_algo_ops *ops, void *st, struct fixture *fx, char *out,
                     size_t len)
{
    for (size_t i = 0; i < len; i++)
        out[i] = (char)('a' + index_of(fx->p, fx->n, pick_key(ops, st, fx->p, fx->n, 0, 0)));
    out[len] = '\0';
}

Test(weighted_round_robin, smooth_5_1_1)
{
    struct fixture fx;
    fx_init(&fx, 3, (const int[]){5, 1, 1});
    const struct lb_algo_ops *ops = algo("weighted_round_robin");
    void *st = ops->create();
    ops->rebuild(st, fx.p, 3);
    char seq[15];
    swrr_seq(ops, st, &fx, seq, 14);
    cr_assert_str_eq(seq, "aabacaaaabacaa");
    ops->destroy(st);
}

Test(weighted_round_robin, runtime_weight_change)
{
    struct fixture fx;
    fx_init(&fx, 3, (const int[]){5, 1, 1});
    const struct lb_algo_ops *ops = algo("weighted_round_robin");
    void *st = ops->create();
    ops->rebuild(st, fx.p, 3);
    char seq[64];
    swrr_seq(ops, st, &fx, seq, 7);
    cr_assert_str_eq(seq, "aabacaa");

    /* At a cycle boundary: the next full cycle follows the new weights. */
    __atomic_store_n(&fx.b[1].weight, 3, __ATOMIC_RELAXED);
    ops->rebuild(st, fx.p, 3);
    size_t cnt[3] = {0};
    for (int i = 0; i < 9; i++)
        cnt[index_of(fx.p, 3, pick_key(ops, st, fx.p, 3, 0, 0))]++;
    cr_assert(cnt[0] == 5 && cnt[1] == 3 && cnt[2] == 1, "counts %zu %zu %zu", cnt[0], cnt[1],
              cnt[2]);

    /* Mid-cycle: kept credits stay bounded, so over many cycles the counts
     * follow the new weights to within a pick or two. */
    (void)pick_key(ops, st, fx.p, 3, 0, 0);
    (void)pick_key(ops, st, fx.p, 3, 0, 0);
    __atomic_store_n(&fx.b[2].weight, 4, __ATOMIC_RELAXED); /* 5:3:4 */
    ops->rebuild(st, fx.p, 3);
    memset(cnt, 0, sizeof(cnt));
    for (int i = 0; i < 12 * 20; i++)
        cnt[index_of(fx.p, 3, pick_key(ops, st, fx.p, 3, 0, 0))]++;
    cr_assert(cnt[0] >= 98 && cnt[0] <= 102, "a %zu", cnt[0]);
    cr_assert(cnt[1] >= 58 && cnt[1] <= 62, "b %zu", cnt[1]);
    cr_assert(cnt[2] >= 78 && cnt[2] <= 82, "c %zu", cnt[2]);
    ops->destroy(st);
}

Test(weighted_round_robin, keeps_credit_of_remaining)
{
    struct fixture fx;
    fx_init(&fx, 3, (const int[]){1, 1, 1});
    const struct lb_algo_ops *ops = algo("weighted_round_robin");
    void *st = ops->create();
    ops->rebuild(st, fx.p, 3);
    cr_assert_eq(pick_key(ops, st, fx.p, 3, 0, 0), fx.p[0]);
    /* Backend a was just served (credit -2, b and c +1). Adding d (fresh,
     * credit 0) in front must not let a go again before b and c. */
    struct backend *set[4] = {&fx.b[3], fx.p[0], fx.p[1], fx.p[2]};
    ops->rebuild(st, set, 4);
    struct backend *next = pick_key(ops, st, set, 4, 0, 0);
    cr_assert(next == fx.p[1], "got %s", next->address);
    ops->destroy(st);
}

/* ---- least_conn ------------------------------------------------------- */

Test(least_conn, picks_minimum)
{
    struct fixture fx;
    fx_init(&fx, 4, NULL);
    const struct lb_algo_ops *ops = algo("least_conn");
    void *st = ops->create();
    ops->rebuild(st, fx.p, 4);
    int act[4] = {5, 3, 1, 4};
    for (int i = 0; i < 4; i++)
        fx.b[i].active = act[i];
    for (int i = 0; i < 20; i++)
        cr_assert_eq(pick_key(ops, st, fx.p, 4, 0, 0), fx.p[2]);
    ops->destroy(st);
}

Test(least_conn, respects_weight)
{
    struct fixture fx;
    fx_init(&fx, 2, (const int[]){1, 4});
    const struct lb_algo_ops *ops = algo("least_conn");
    void *st = ops->create();
    ops->rebuild(st, fx.p, 2);
    /* 2/1 vs 6/4: b is relatively less loaded despite more in flight. */
    fx.b[0].active = 2;
    fx.b[1].active = 6;
    for (int i = 0; i < 10; i++)
        cr_assert_eq(pick_key(ops, st, fx.p, 2, 0, 0), fx.p[1]);
    /* 1/1 vs 6/4: now a. */
    fx.b[0].active = 1;
    for (int i = 0; i < 10; i++)
        cr_assert_eq(pick_key(ops, st, fx.p, 2, 0, 0), fx.p[0]);

    /* Simulated load that never completes: in-flight ends up ~1:4. */
    fx.b[0].active = fx.b[1].active = 0;
    for (int i = 0; i < 1000; i++)
        pick_key(ops, st, fx.p, 2, 0, 0)->active++;
    cr_assert(fx.b[0].active >= 199 && fx.b[0].active <= 201, "a %d b %d", fx.b[0].active,
              fx.b[1].active);
    ops->destroy(st);
}

Test(least_conn, tie_rotation_spreads)
{
    struct fixture fx;
    fx_init(&fx, 4, NULL);
    const struct lb_algo_ops *ops = algo("least_conn");
    void *st = ops->create();
    ops->rebuild(st, fx.p, 4);
    size_t cnt[4] = {0};
    for (int i = 0; i < 400; i++)
        cnt[index_of(fx.p, 4, pick_key(ops, st, fx.p, 4, 0, 0))]++;
    for (int i = 0; i < 4; i++)
        cr_assert_eq(cnt[i], 100, "backend %d got %zu of 400 idle picks", i, cnt[i]);
    ops->destroy(st);
}

/* ---- p2c -------------------------------------------------------------- */

Test(p2c, avoids_loaded_of_two)
{
    struct fixture fx;
    fx_init(&fx, 2, NULL);
    const struct lb_algo_ops *ops = algo("p2c");
    void *st = ops->create();
    ops->rebuild(st, fx.p, 2);
    uint64_t seed = 1;
    for (int k = 0; k < 2; k++) {
        fx.b[k].active = 10;
        fx.b[1 - k].active = 0;
        for (int i = 0; i < 1000; i++)
            cr_assert_eq(pick_key(ops, st, fx.p, 2, 0, next_rnd(&seed)), fx.p[1 - k]);
    }
    ops->destroy(st);
}

Test(p2c, heavy_backend_starved)
{
    struct fixture fx;
    fx_init(&fx, 4, NULL);
    const struct lb_algo_ops *ops = algo("p2c");
    void *st = ops->create();
    ops->rebuild(st, fx.p, 4);
    fx.b[2].active = 1000;
    uint64_t seed = 42;
    size_t cnt[4] = {0};
    for (int i = 0; i < 10000; i++)
        cnt[index_of(fx.p, 4, pick_key(ops, st, fx.p, 4, 0, next_rnd(&seed)))]++;
    cr_assert_lt(cnt[2], 1000, "loaded backend got %zu of 10000", cnt[2]);
    /* The rest share the load, each near a third. */
    for (int i = 0; i < 4; i++)
        if (i != 2)
            cr_assert(cnt[i] > 2800 && cnt[i] < 3900, "backend %d got %zu", i, cnt[i]);
    ops->destroy(st);
}

/* ---- random ----------------------------------------------------------- */

Test(random, weighted_spread)
{
    struct fixture fx;
    fx_init(&fx, 3, (const int[]){1, 2, 3});
    const struct lb_algo_ops *ops = algo("random");
    void *st = ops->create();
    ops->rebuild(st, fx.p, 3);
    uint64_t seed = 7;
    size_t cnt[3] = {0};
    for (int i = 0; i < 60000; i++)
        cnt[index_of(fx.p, 3, pick_key(ops, st, fx.p, 3, 0, next_rnd(&seed)))]++;
    for (int i = 0; i < 3; i++) {
        double share = cnt[i] / 60000.0, want = (i + 1) / 6.0;
        cr_assert(share > want - 0.03 && share < want + 0.03, "backend %d share %f want %f", i,
                  share, want);
    }
    ops->destroy(st);
}

/* ---- hashing algorithms: shared checks -------------------------------- */

/* Assign nkeys client keys over bs[0..n) into out[]. */
static void assign(const struct lb_algo_ops *ops, void *st, struct backend *const *bs, size_t n,
                   size_t nkeys, struct backend **out)
{
    ops->rebuild(st, bs, n);
    for (size_t i = 0; i < nkeys; i++)
        out[i] = pick_key(ops, st, bs, n, client_key(i), i * 7919);
}

static void check_sticky(const char *name)
{
    struct fixture fx;
    fx_init(&fx, 4, (const int[]){1, 2, 3, 4});
    const struct lb_algo_ops *ops = algo(name);
    void *st = ops->create();
    ops->rebuild(st, fx.p, 4);
    uint64_t seed = 3;
    for (size_t i = 0; i < 500; i++) {
        struct backend *b = pick_key(ops, st, fx.p, 4, client_key(i), next_rnd(&seed));
        for (int k = 0; k < 5; k++)
            cr_assert_eq(pick_key(ops, st, fx.p, 4, client_key(i), next_rnd(&seed)), b);
    }
    /* Same set in a different pool order: same choices. */
    struct backend *rev[4] = {fx.p[3], fx.p[2], fx.p[1], fx.p[0]};
    struct backend *before[500];
    for (size_t i = 0; i < 500; i++)
        before[i] = pick_key(ops, st, fx.p, 4, client_key(i), 0);
    ops->rebuild(st, rev, 4);
    for (size_t i = 0; i < 500; i++)
        cr_assert_eq(pick_key(ops, st, rev, 4, client_key(i), 0), before[i]);
    ops->destroy(st);
}

static void check_balance(const char *name, size_t nkeys, const int *weights, size_t n, double tol)
{
    struct fixture fx;
    fx_init(&fx, n, weights);
    const struct lb_algo_ops *ops = algo(name);
    void *st = ops->create();
    struct backend **out = calloc(nkeys, sizeof(*out));
    assign(ops, st, fx.p, n, nkeys, out);
    size_t cnt[MAXB] = {0};
    int wsum = 0;
    for (size_t i = 0; i < n; i++)
        wsum += weights ? weights[i] : 1;
    for (size_t i = 0; i < nkeys; i++)
        cnt[index_of(fx.p, n, out[i])]++;
    for (size_t i = 0; i < n; i++) {
        double share = (double)cnt[i] / (double)nkeys;
        double want = (weights ? weights[i] : 1) / (double)wsum;
        cr_assert(share > want - tol && share < want + tol, "%s: backend %zu share %f want %f",
                  name, i, share, want);
    }
    free(out);
    ops->destroy(st);
}

/* Grow 4 -> 5 backends; returns the fraction of keys moved and stores the
 * fraction of moved keys that landed on the newcomer. */
static double check_add(const char *name, size_t nkeys, double *to_new)
{
    struct fixture fx;
    fx_init(&fx, 5, NULL);
    const struct lb_algo_ops *ops = algo(name);
    void *st = ops->create();
    struct backend **a = calloc(nkeys, sizeof(*a)), **b = calloc(nkeys, sizeof(*b));
    assign(ops, st, fx.p, 4, nkeys, a);
    assign(ops, st, fx.p, 5, nkeys, b);
    size_t moved = 0, onnew = 0;
    for (size_t i = 0; i < nkeys; i++) {
        if (a[i] != b[i]) {
            moved++;
            onnew += b[i] == fx.p[4];
        }
    }
    free(a);
    free(b);
    ops->destroy(st);
    *to_new = moved ? (double)onnew / (double)moved : 1.0;
    return (double)moved / (double)nkeys;
}

/* Shrink 4 -> 3 by removing the second backend; returns the fraction of
 * keys that moved although their backend stayed. */
static double check_remove(const char *name, size_t nkeys)
{
    struct fixture fx;
    fx_init(&fx, 4, NULL);
    const struct lb_algo_ops *ops = algo(name);
    void *st = ops->create();
    struct backend **a = calloc(nkeys, sizeof(*a)), **b = calloc(nkeys, sizeof(*b));
    struct backend *three[3] = {fx.p[0], fx.p[2], fx.p[3]};
    assign(ops, st, fx.p, 4, nkeys, a);
    assign(ops, st, three, 3, nkeys, b);
    size_t stray = 0, gone = 0;
    for (size_t i = 0; i < nkeys; i++) {
        if (a[i] == fx.p[1]) {
            gone++;
            cr_assert_neq(b[i], fx.p[1]);
        } else if (a[i] != b[i]) {
            stray++;
        }
    }
    cr_assert(gone > 0);
    free(a);
    free(b);
    ops->destroy(st);
    return (double)stray / (double)nkeys;
}

/* ---- ip_hash ---------------------------------------------------------- */

Test(ip_hash, sticky)
{
    check_sticky("ip_hash");
}

Test(ip_hash, balanced)
{
    check_balance("ip_hash", 10000, NULL, 4, 0.05);
}

Test(ip_hash, add_moves_only_to_new)
{
    double to_new, moved = check_add("ip_hash", 10000, &to_new);
    cr_assert(moved >= 0.15 && moved <= 0.25, "moved %f", moved);
    cr_assert_eq(to_new, 1.0, "only %f of moved keys went to the new backend", to_new);
}

Test(ip_hash, remove_moves_only_its_keys)
{
    double stray = check_remove("ip_hash", 10000);
    cr_assert_eq(stray, 0.0, "%f of keys moved between surviving backends", stray);
}

Test(ip_hash, weighted)
{
    check_balance("ip_hash", 20000, (const int[]){1, 2, 3, 4}, 4, 0.03);
}

/* ---- consistent_hash (Maglev) ----------------------------------------- */

Test(consistent_hash, sticky)
{
    check_sticky("consistent_hash");
}

Test(consistent_hash, balanced)
{
    /* ±5% of each share (1.25 points) over 100k keys. */
    check_balance("consistent_hash", 100000, NULL, 4, 0.25 * 0.05);
}

/* Slot shares of the table itself, via keys 0..M-1 (key % M is the slot). */
static void check_slots(const int *weights, size_t n)
{
    struct fixture fx;
    fx_init(&fx, n, weights);
    const struct lb_algo_ops *ops = algo("consistent_hash");
    void *st = ops->create();
    ops->rebuild(st, fx.p, n);
    size_t cnt[MAXB] = {0};
    int wsum = 0;
    for (uint64_t k = 0; k < 65537; k++)
        cnt[index_of(fx.p, n, pick_key(ops, st, fx.p, n, k, 0))]++;
    for (size_t i = 0; i < n; i++)
        wsum += weights[i];
    for (size_t i = 0; i < n; i++) {
        double want = 65537.0 * weights[i] / wsum;
        cr_assert(cnt[i] > want * 0.99 && cnt[i] < want * 1.01, "backend %zu: %zu slots, want %f",
                  i, cnt[i], want);
    }
    ops->destroy(st);
}

Test(consistent_hash, table_shares)
{
    check_slots((const int[]){1, 1, 1, 1, 1}, 5);
    check_slots((const int[]){1, 2, 3}, 3);
    check_slots((const int[]){10, 1, 1, 7, 3, 100}, 6);
}

Test(consistent_hash, add_moves_about_one_nth)
{
    double to_new, moved = check_add("consistent_hash", 100000, &to_new);
    cr_assert(moved <= 0.2 + 0.03, "moved %f", moved);
    cr_assert(moved >= 0.15, "moved %f", moved);
    cr_assert(to_new >= 0.97, "only %f of moved keys went to the new backend", to_new);
}

Test(consistent_hash, remove_moves_mostly_its_keys)
{
    double stray = check_remove("consistent_hash", 100000);
    cr_assert_leq(stray, 0.03, "%f of keys moved between surviving backends", stray);
}

Test(consistent_hash, weighted)
{
    check_balance("consistent_hash", 100000, (const int[]){1, 2, 3, 4}, 4, 0.01);
}

/* ---- every algorithm -------------------------------------------------- */

Test(all, single_backend)
{
    for (size_t a = 0; lb_algos[a]; a++) {
        const struct lb_algo_ops *ops = lb_algos[a];
        struct fixture fx;
        fx_init(&fx, 1, (const int[]){3});
        fx.b[0].active = 50;
        void *st = ops->create();
        cr_assert_not_null(st, "%s", ops->name);
        ops->rebuild(st, fx.p, 1);
        uint64_t seed = 9;
        for (int i = 0; i < 100; i++)
            cr_assert_eq(pick_key(ops, st, fx.p, 1, next_rnd(&seed), next_rnd(&seed)), fx.p[0],
                         "%s", ops->name);
        ops->destroy(st);
    }
}

Test(all, rebuild_empty_and_back)
{
    for (size_t a = 0; lb_algos[a]; a++) {
        const struct lb_algo_ops *ops = lb_algos[a];
        struct fixture fx;
        fx_init(&fx, 6, (const int[]){1, 2, 3, 1, 2, 3});
        void *st = ops->create();
        uint64_t seed = 11;

        ops->rebuild(st, NULL, 0); /* fresh state straight to empty */
        ops->rebuild(st, fx.p, 3);
        for (int i = 0; i < 50; i++)
            index_of(fx.p, 3, pick_key(ops, st, fx.p, 3, next_rnd(&seed), next_rnd(&seed)));
        ops->rebuild(st, fx.p, 0);
        ops->rebuild(st, NULL, 0);
        /* A different, larger set: picks come only from it, and all of it
         * gets used. */
        struct backend *const *set = &fx.p[2];
        ops->rebuild(st, set, 4);
        size_t cnt[4] = {0};
        for (int i = 0; i < 400; i++)
            cnt[index_of(set, 4, pick_key(ops, st, set, 4, next_rnd(&seed), next_rnd(&seed)))]++;
        for (int i = 0; i < 4; i++)
            cr_assert_gt(cnt[i], 0, "%s never picked backend %d after rebuild", ops->name, i);
        ops->destroy(st);
    }
}

/* ---- properties as data ---------------------------------------------- */

Test(algo, properties_say_which_take_a_key_and_which_weigh_load)
{
    static const struct {
        const char *name;
        enum lb_algo_key key;
        unsigned flags;
    } want[] = {
        {"round_robin", LB_ALGO_KEY_NONE, 0},
        {"least_conn", LB_ALGO_KEY_NONE, LB_ALGO_F_LOAD_AWARE},
        {"ip_hash", LB_ALGO_KEY_CLIENT, 0},
        {"weighted_round_robin", LB_ALGO_KEY_NONE, 0},
        {"p2c", LB_ALGO_KEY_NONE, LB_ALGO_F_LOAD_AWARE},
        {"consistent_hash", LB_ALGO_KEY_REQUEST, 0},
        {"random", LB_ALGO_KEY_NONE, 0},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const struct lb_algo_ops *ops = algo(want[i].name);
        cr_assert_eq(ops->key, want[i].key, "%s: key %d, want %d", ops->name, ops->key,
                     want[i].key);
        cr_assert_eq(ops->flags, want[i].flags, "%s: flags %u, want %u", ops->name, ops->flags,
                     want[i].flags);
    }
}

Test(algo, config_names_match_the_registry_in_order)
{
    const struct conf_entry *e = NULL;
    for (size_t i = 0; i < lb_conf_table_len; i++)
        if (!strcmp(lb_conf_table[i].name, "algorithm"))
            e = &lb_conf_table[i];
    cr_assert_not_null(e);
    size_t i = 0;
    for (; lb_algos[i]; i++) {
        cr_assert_not_null(e->enum_names[i], "--algorithm lacks %s", lb_algos[i]->name);
        cr_assert_str_eq(e->enum_names[i], lb_algos[i]->name, "entry %zu", i);
    }
    cr_assert_null(e->enum_names[i], "--algorithm has an extra name %s", e->enum_names[i]);
}

Test(algo, key_kind_of_a_parsed_config_comes_from_the_ops)
{
    static const char *const names[] = {"round_robin", "ip_hash", "consistent_hash"};
    for (size_t i = 0; i < 3; i++) {
        char a0[] = "--listen", a1[] = "127.0.0.1:0", a2[] = "--backend", a3[] = "127.0.0.1:1",
             a4[] = "--algorithm", a5[32];
        snprintf(a5, sizeof a5, "%s", names[i]);
        char *argv[] = {a0, a1, a2, a3, a4, a5};
        struct lb_config cfg;
        char err[256];
        cr_assert_eq(lb_config_parse(&cfg, 6, argv, err, sizeof err), 0, "%s", err);
        cr_assert_eq(cfg.key_kind, (int)lb_algo_find(names[i])->key, "%s", names[i]);
        lb_config_free(&cfg);
    }
}
