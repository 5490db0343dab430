/* Unit tests for the per-address token buckets (src/lb/ratelimit.c). Time is
 * passed in, so every case is exact. */
#include <criterion/criterion.h>
#include <pthread.h>

#include "lb/ratelimit.h"

static struct ratelimit R;

static void setup(void)
{
    cr_assert_eq(ratelimit_init(&R), 0);
}

static void teardown(void)
{
    ratelimit_free(&R);
}

#define T0 1000000000ull /* any start time, in us */

TestSuite(ratelimit, .init = setup, .fini = teardown);

Test(ratelimit, a_new_address_gets_its_burst_then_waits)
{
    for (int i = 0; i < 5; i++)
        cr_assert_eq(ratelimit_take(&R, 42, T0, 10, 5), 0, "request %d of the burst", i);
    cr_assert_eq(ratelimit_take(&R, 42, T0, 10, 5), 1, "the 6th waits (1 s, rounded up)");
}

Test(ratelimit, tokens_come_back_at_the_rate)
{
    for (int i = 0; i < 5; i++)
        ratelimit_take(&R, 42, T0, 10, 5);
    cr_assert_neq(ratelimit_take(&R, 42, T0 + 50000, 10, 5), 0, "half a token after 50 ms");
    cr_assert_eq(ratelimit_take(&R, 42, T0 + 100000, 10, 5), 0, "one token after 100 ms");
    cr_assert_neq(ratelimit_take(&R, 42, T0 + 100000, 10, 5), 0, "and only one");
    /* A long pause refills to the burst, never beyond. */
    unsigned ok = 0;
    for (int i = 0; i < 20; i++)
        ok += ratelimit_take(&R, 42, T0 + 3600000000ull, 10, 5) == 0;
    cr_assert_eq(ok, 5, "after an hour: %u of 20 go (burst 5)", ok);
}

Test(ratelimit, the_wait_is_whole_seconds_until_one_token)
{
    /* 0.25 tokens/s, burst 1: after one request the next token is 4 s away. */
    cr_assert_eq(ratelimit_take(&R, 7, T0, 0.25, 1), 0);
    cr_assert_eq(ratelimit_take(&R, 7, T0, 0.25, 1), 4);
    /* A refused request does not consume: 1 s later, 3 s to go. */
    cr_assert_eq(ratelimit_take(&R, 7, T0 + 1000000, 0.25, 1), 3);
    cr_assert_eq(ratelimit_take(&R, 7, T0 + 4000000, 0.25, 1), 0);
}

Test(ratelimit, addresses_are_independent)
{
    for (int i = 0; i < 3; i++)
        ratelimit_take(&R, 1, T0, 1, 3);
    cr_assert_neq(ratelimit_take(&R, 1, T0, 1, 3), 0);
    cr_assert_eq(ratelimit_take(&R, 2, T0, 1, 3), 0, "another address has its own bucket");
}

Test(ratelimit, a_shared_slot_limits_together_never_more_loosely)
{
    uint64_t a = 5, b = 5 + RATELIMIT_SLOTS; /* same slot */
    for (int i = 0; i < 3; i++)
        cr_assert_eq(ratelimit_take(&R, a, T0, 1, 3), 0);
    cr_assert_neq(ratelimit_take(&R, b, T0, 1, 3), 0, "b shares a's empty bucket");
    cr_assert_neq(ratelimit_take(&R, a, T0 + 500000, 1, 3), 0);
    /* Once a's bucket would have refilled, the slot is b's, with a full burst. */
    for (int i = 0; i < 3; i++)
        cr_assert_eq(ratelimit_take(&R, b, T0 + 10000000, 1, 3), 0, "b request %d", i);
    cr_assert_neq(ratelimit_take(&R, b, T0 + 10000000, 1, 3), 0);
}

struct racer {
    unsigned granted;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    for (int i = 0; i < 1000; i++)
        r->granted += ratelimit_take(&R, 99, T0, 1, 100) == 0;
    return NULL;
}

Test(ratelimit, threads_share_one_bucket_exactly)
{
    pthread_t t[4];
    struct racer r[4] = {{0}};
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, race, &r[i]);
    unsigned total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        total += r[i].granted;
    }
    cr_assert_eq(total, 100, "4 threads x 1000 requests at one instant: %u granted", total);
}
