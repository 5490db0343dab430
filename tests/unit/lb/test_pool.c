/* Unit tests for the backend pool (src/lb/pool.c): adding, weights,
 * draining, passive ejection, slow start, the per-backend cap, through the
 * public API on literal loopback addresses (nothing is connected). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "base/clock.h"
#include "base/log.h"
#include "lb/pool.h"

static struct pool P;

static void setup_algo(const char *algo, int nbackends, const int *weights)
{
    log_set_level(LOG_ERROR);
    cr_assert_eq(pool_init(&P, lb_algo_find(algo), 2), 0);
    for (int i = 0; i < nbackends; i++) {
        char spec[64], err[256];
        snprintf(spec, sizeof spec, "127.0.0.1:%d", 10001 + i);
        int rc = pool_add(&P, spec, weights ? weights[i] : 0, err, sizeof err);
        cr_assert_eq(rc, 0, "pool_add %s: %d %s", spec, rc, err);
    }
}

static void teardown(void)
{
    pool_destroy(&P);
}

static struct backend *nth(size_t i)
{
    cr_assert_lt(i, P.nall);
    return P.all[i];
}

/* Deterministic ctx->rnd (splitmix64). */
static uint64_t next_rnd(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Pick once and give the slot back at once; returns the backend's index in
 * P.all, or -1 (then *full tells why). */
static int pick1(uint64_t key, uint64_t rnd, const struct backend *exclude, int *full)
{
    struct lb_pick_ctx ctx = {key, rnd};
    int f;
    struct backend *b = pool_pick(&P, &ctx, exclude, &f);
    if (full)
        *full = f;
    if (!b)
        return -1;
    int at = -1;
    for (size_t i = 0; i < P.nall; i++)
        if (P.all[i] == b)
            at = (int)i;
    pool_release(&P, b);
    return at;
}

/* ---- membership ---------------------------------------------------------- */

Test(pool, add_find_and_refuse_duplicates_and_bad_specs, .fini = teardown)
{
    setup_algo("round_robin", 2, NULL);
    char err[256];
    cr_assert_eq(pool_add(&P, "127.0.0.1:10001", 0, err, sizeof err), -EEXIST);
    cr_assert(strstr(err, "already exists"), "%s", err);
    cr_assert_eq(pool_add(&P, "127.0.0.1:10003,weight=0", 0, err, sizeof err), -EINVAL);
    cr_assert_eq(pool_add(&P, "127.0.0.1:10003,speed=1", 0, err, sizeof err), -EINVAL);
    cr_assert_eq(pool_add(&P, "127.0.0.1", 0, err, sizeof err), -EINVAL);
    cr_assert_eq(pool_count(&P), 2);
    struct backend *b = pool_find(&P, "127.0.0.1:10002");
    cr_assert_not_null(b);
    cr_assert_str_eq(b->address, "127.0.0.1:10002");
    pool_unref(b);
    cr_assert_null(pool_find(&P, "127.0.0.1:10009"));
    cr_assert_eq(pool_add(&P, "127.0.0.1:10003,weight=7", 0, err, sizeof err), 0);
    cr_assert_eq(backend_weight(nth(2)), 7);
}

Test(pool, weights_steer_weighted_round_robin_and_can_change, .fini = teardown)
{
    static const int w[] = {1, 3};
    setup_algo("weighted_round_robin", 2, w);
    int cnt[2] = {0, 0};
    for (int i = 0; i < 40; i++)
        cnt[pick1(0, 0, NULL, NULL)]++;
    cr_assert_eq(cnt[0], 10, "weight 1 of 4: %d of 40", cnt[0]);
    cr_assert_eq(cnt[1], 30, "weight 3 of 4: %d of 40", cnt[1]);
    cr_assert_eq(pool_set_weight(&P, "127.0.0.1:10001", 3), 0);
    cr_assert_eq(pool_set_weight(&P, "127.0.0.1:10009", 3), -ENOENT);
    cr_assert_eq(pool_set_weight(&P, "127.0.0.1:10001", 0), -EINVAL);
    cr_assert_eq(pool_set_weight(&P, "127.0.0.1:10001", BACKEND_WEIGHT_MAX + 1), -EINVAL);
    cnt[0] = cnt[1] = 0;
    for (int i = 0; i < 40; i++)
        cnt[pick1(0, 0, NULL, NULL)]++;
    cr_assert_eq(cnt[0], 20, "equal weights: %d of 40", cnt[0]);
}

Test(pool, exclude_is_avoided_unless_it_is_the_only_one, .fini = teardown)
{
    setup_algo("round_robin", 2, NULL);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(pick1(0, 0, nth(0), NULL), 1);
    pool_destroy(&P);
    setup_algo("round_robin", 1, NULL);
    cr_assert_eq(pick1(0, 0, nth(0), NULL), 0);
}

/* ---- draining ------------------------------------------------------------ */

Test(pool, drain_stops_new_picks_and_removes_when_idle, .fini = teardown)
{
    setup_algo("round_robin", 2, NULL);
    struct lb_pick_ctx ctx = {0, 0};
    int full;
    struct backend *held = NULL;
    /* Hold one request on 10001. */
    while (!held) {
        struct backend *b = pool_pick(&P, &ctx, NULL, &full);
        if (strcmp(b->address, "127.0.0.1:10001") == 0)
            held = b;
        else
            pool_release(&P, b);
    }
    cr_assert_eq(pool_drain(&P, "127.0.0.1:10001"), 0);
    cr_assert_eq(backend_state(held), BACKEND_DRAINING);
    cr_assert_eq(pool_count(&P), 2, "listed while a request is in flight");
    for (int i = 0; i < 10; i++)
        cr_assert_eq(strcmp(P.all[pick1(0, 0, NULL, NULL)]->address, "127.0.0.1:10002"), 0);
    char err[256];
    cr_assert_eq(pool_add(&P, "127.0.0.1:10001", 0, err, sizeof err), -EEXIST,
                 "a draining backend is still listed");
    pool_release(&P, held);
    cr_assert_eq(pool_count(&P), 1, "removed when its last request ended");
    cr_assert_eq(pool_drain(&P, "127.0.0.1:10001"), -ENOENT);
    cr_assert_eq(pool_drain(&P, "127.0.0.1:10002"), 0);
    cr_assert_eq(pool_count(&P), 0, "an idle backend leaves at once");
    int f = -1;
    cr_assert_eq(pick1(0, 0, NULL, &f), -1);
    cr_assert_eq(f, 0, "empty pool: not 'full'");
}

/* ---- passive ejection ----------------------------------------------------- */

static void tune(int eject_after, uint64_t base, uint64_t max, uint64_t slow, int max_active)
{
    struct pool_tunables t = {eject_after, base, max, slow, max_active};
    pool_set_tunables(&P, &t);
}

Test(pool, consecutive_failures_eject_and_time_doubles, .fini = teardown)
{
    setup_algo("round_robin", 3, NULL);
    tune(3, 1000, 3000, 0, 0);
    struct backend *b = nth(0);
    pool_report_failure(&P, b, 0);
    pool_report_failure(&P, b, 0);
    pool_report_success(b); /* a success resets the streak */
    pool_report_failure(&P, b, 0);
    pool_report_failure(&P, b, 0);
    cr_assert_eq(backend_state(b), BACKEND_UP, "2 in a row is below eject_after");
    uint64_t t0 = clock_mono_ms();
    pool_report_failure(&P, b, 0);
    cr_assert_eq(backend_state(b), BACKEND_DOWN);
    uint64_t until = b->ejected_until_ms;
    cr_assert(until >= t0 + 1000 && until <= clock_mono_ms() + 1000, "first ejection: base");
    for (int i = 0; i < 30; i++)
        cr_assert_neq(pick1(0, 0, NULL, NULL), 0, "an ejected backend is not picked");
    /* Time is up: the tick brings it back. */
    b->ejected_until_ms = clock_mono_ms() - 1;
    pool_tick(&P);
    cr_assert_eq(backend_state(b), BACKEND_UP);
    cr_assert_eq(b->ejected_until_ms, 0);
    for (int k = 0; k < 3; k++)
        pool_report_failure(&P, b, 0);
    cr_assert_eq(backend_state(b), BACKEND_DOWN);
    uint64_t d = b->ejected_until_ms - clock_mono_ms();
    cr_assert(d > 1900 && d <= 2000, "second ejection doubles: %llu ms", (unsigned long long)d);
    b->ejected_until_ms = clock_mono_ms() - 1;
    pool_tick(&P);
    for (int j = 0; j < 2; j++) {
        for (int k = 0; k < 3; k++)
            pool_report_failure(&P, b, 0);
        d = b->ejected_until_ms - clock_mono_ms();
        cr_assert(d > 2900 && d <= 3000, "capped at eject_max: %llu ms", (unsigned long long)d);
        b->ejected_until_ms = clock_mono_ms() - 1;
        pool_tick(&P);
    }
}

Test(pool, never_ejects_more_than_half_the_pool, .fini = teardown)
{
    setup_algo("round_robin", 2, NULL);
    tune(1, 10000, 10000, 0, 0);
    pool_report_failure(&P, nth(0), 0);
    cr_assert_eq(backend_state(nth(0)), BACKEND_DOWN, "1 of 2 may go");
    pool_report_failure(&P, nth(1), 0);
    cr_assert_eq(backend_state(nth(1)), BACKEND_UP, "the last half stays in");
    cr_assert_eq(nth(1)->consecutive_failures, 0, "and its streak starts over");
    tune(0, 10000, 10000, 0, 0);
    for (int i = 0; i < 5; i++)
        pool_report_failure(&P, nth(1), 0);
    cr_assert_eq(backend_state(nth(1)), BACKEND_UP, "eject_after 0 turns ejection off");
}

Test(pool, health_checks_end_only_connection_failure_ejections, .fini = teardown)
{
    setup_algo("round_robin", 4, NULL);
    tune(1, 10000, 10000, 0, 0);
    pool_report_failure(&P, nth(0), 1); /* lost: connection failures */
    pool_report_failure(&P, nth(1), 0); /* 5xx or slow */
    cr_assert_eq(backend_state(nth(0)), BACKEND_DOWN);
    cr_assert_eq(backend_state(nth(1)), BACKEND_DOWN);
    pool_end_ejection(&P, nth(0), "checks pass");
    pool_end_ejection(&P, nth(1), "checks pass");
    cr_assert_eq(backend_state(nth(0)), BACKEND_UP);
    cr_assert_eq(backend_state(nth(1)), BACKEND_DOWN, "a 5xx ejection runs its full time");
    pool_set_health(&P, nth(2), 1, "checks fail");
    cr_assert_eq(backend_state(nth(2)), BACKEND_DOWN);
    pool_set_health(&P, nth(2), 0, "checks pass");
    cr_assert_eq(backend_state(nth(2)), BACKEND_UP);
}

/* ---- slow start ----------------------------------------------------------- */

/* Eject backend 0, bring it back (slow start begins), and count how many of
 * n picks of keys (key i, or all one key) land on it. */
static int comeback_share(const char *algo, int n, int same_key, uint64_t *key0)
{
    setup_algo(algo, 3, NULL);
    tune(1, 10000, 10000, 60000, 0);
    struct backend *b = nth(0);
    pool_report_failure(&P, b, 0);
    cr_assert_eq(backend_state(b), BACKEND_DOWN);
    b->ejected_until_ms = clock_mono_ms() - 1;
    pool_tick(&P);
    cr_assert_eq(backend_state(b), BACKEND_UP);
    cr_assert_neq(b->slow_start_ms, 0, "slow start began");
    /* A key that the algorithm maps to backend 0. */
    uint64_t s = 7, key = 0;
    for (uint64_t k = 1; k < 10000 && !key; k++) {
        struct lb_pick_ctx ctx = {lb_hash64(&k, sizeof k), 0};
        if (P.algo->pick(P.algo_state, P.eligible, P.neligible, &ctx) == b)
            key = ctx.key;
    }
    *key0 = key;
    int on_b = 0;
    for (int i = 0; i < n; i++) {
        uint64_t k = same_key ? key : next_rnd(&s);
        on_b += pick1(k, next_rnd(&s), NULL, NULL) == 0;
    }
    return on_b;
}

Test(pool, slow_start_ramps_an_unkeyed_algorithm, .fini = teardown)
{
    uint64_t key;
    int on_b = comeback_share("round_robin", 3000, 0, &key);
    /* Round robin gives it 1000 of 3000; the ramp starts at 5% of that. */
    cr_assert(on_b > 10 && on_b < 150, "returning backend got %d of 3000 picks", on_b);
}

Test(pool, slow_start_keeps_a_keyed_algorithm_sticky, .fini = teardown)
{
    static const char *const keyed[] = {"ip_hash", "consistent_hash"};
    for (int a = 0; a < 2; a++) {
        uint64_t key;
        int on_b = comeback_share(keyed[a], 500, 1, &key);
        cr_assert_neq(key, 0, "%s: found a key of backend 0", keyed[a]);
        cr_assert_eq(on_b, 500, "%s: the key's backend kept %d of 500 picks", keyed[a], on_b);
        pool_destroy(&P);
    }
    setup_algo("round_robin", 1, NULL);
}

Test(pool, slow_start_ends_after_its_ramp, .fini = teardown)
{
    setup_algo("round_robin", 2, NULL);
    tune(1, 10000, 10000, 1000, 0);
    struct backend *b = nth(0);
    b->slow_start_ms = clock_mono_ms() - 2000; /* came back 2 s ago, ramp 1 s */
    int cnt[2] = {0, 0};
    uint64_t s = 1;
    for (int i = 0; i < 100; i++)
        cnt[pick1(0, next_rnd(&s), NULL, NULL)]++;
    cr_assert_eq(cnt[0], 50, "after the ramp: a full share (%d of 100)", cnt[0]);
    cr_assert_eq(b->slow_start_ms, 0, "and the ramp is over");
}

/* ---- the per-backend cap (max-conns) -------------------------------------- */

Test(pool, a_full_backend_passes_its_turn_and_all_full_says_full, .fini = teardown)
{
    setup_algo("round_robin", 2, NULL);
    tune(0, 1000, 1000, 0, 1);
    struct lb_pick_ctx ctx = {0, 0};
    int full;
    struct backend *x = pool_pick(&P, &ctx, NULL, &full);
    struct backend *y = pool_pick(&P, &ctx, NULL, &full);
    cr_assert(x && y && x != y, "one each");
    cr_assert_eq(backend_active(x), 1);
    cr_assert_null(pool_pick(&P, &ctx, NULL, &full));
    cr_assert_eq(full, 1, "every backend at its cap");
    pool_release(&P, y);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(P.all[pick1(0, 0, NULL, NULL)], y, "the one with room takes every turn");
    pool_release(&P, x);
    cr_assert_eq(backend_active(x), 0);
    cr_assert_eq(x->requests + y->requests, 6);
}

Test(pool, a_keyed_request_spills_to_the_same_backend_every_time, .fini = teardown)
{
    setup_algo("consistent_hash", 4, NULL);
    tune(0, 1000, 1000, 0, 1);
    uint64_t key = lb_hash64("client", 6);
    struct lb_pick_ctx ctx = {key, 0};
    int full;
    struct backend *home = pool_pick(&P, &ctx, NULL, &full);
    cr_assert_not_null(home);
    int first = pick1(key, 1, NULL, NULL);
    cr_assert_neq(P.all[first], home);
    for (uint64_t r = 2; r < 20; r++)
        cr_assert_eq(pick1(key, r, NULL, NULL), first, "spill is deterministic");
    pool_release(&P, home);
    cr_assert_eq(P.all[pick1(key, 0, NULL, NULL)], home, "and returns home once there is room");
}

Test(pool, a_load_aware_algorithm_spills_to_the_least_loaded, .fini = teardown)
{
    /* least_conn's choice (A, 2/10 in flight) is at its cap of 2; B has
     * 1/1, C 1/2: the spill goes to C, not to B (next in pool order). */
    static const int w[] = {10, 1, 2};
    setup_algo("least_conn", 3, w);
    tune(0, 1000, 1000, 0, 2);
    nth(0)->active = 2;
    nth(1)->active = 1;
    nth(2)->active = 1;
    for (int i = 0; i < 6; i++)
        cr_assert_eq(pick1(0, (uint64_t)i, NULL, NULL), 2, "pick %d", i);
    nth(0)->active = nth(1)->active = nth(2)->active = 0;
}

Test(pool, reload_tunables_apply_to_the_next_pick, .fini = teardown)
{
    setup_algo("round_robin", 1, NULL);
    tune(0, 1000, 1000, 0, 1);
    struct lb_pick_ctx ctx = {0, 0};
    int full;
    struct backend *x = pool_pick(&P, &ctx, NULL, &full);
    cr_assert_null(pool_pick(&P, &ctx, NULL, &full));
    tune(0, 1000, 1000, 0, 0); /* cap lifted */
    struct backend *y = pool_pick(&P, &ctx, NULL, &full);
    cr_assert_eq(y, x);
    cr_assert_eq(backend_active(x), 2);
    pool_release(&P, x);
    pool_release(&P, y);
}
