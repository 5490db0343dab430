/* Unit tests for src/bench/bench_sched.c: the open-model schedule. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "bench/bench.h"

Test(sched, one_thread_even_spacing)
{
    /* 200/s: one request every 5 ms from t0. */
    cr_assert(eq(u64, bench_sched_at(1000, 200, 1, 0, 0), 1000));
    cr_assert(eq(u64, bench_sched_at(1000, 200, 1, 0, 1), 1000 + 5000000));
    cr_assert(eq(u64, bench_sched_at(1000, 200, 1, 0, 600), 1000 + 3000000000ULL));
}

Test(sched, threads_interleave)
{
    /* 1000/s over 4 threads: together every 1 ms, each thread every 4 ms. */
    for (unsigned k = 0; k < 4; k++) {
        cr_assert(eq(u64, bench_sched_at(0, 1000, 4, k, 0), k * 1000000ULL));
        cr_assert(eq(u64, bench_sched_at(0, 1000, 4, k, 1), (4 + k) * 1000000ULL));
    }
}

Test(sched, no_drift_over_long_runs)
{
    /* 3 requests/s do not divide a second in whole nanoseconds: request
     * 3,000,000 (a million seconds in) still lands on the exact second. */
    cr_assert(eq(u64, bench_sched_at(0, 3, 1, 0, 3000000), 1000000ULL * 1000000000ULL));
    /* Requests in [t0, t0 + d) for rate R and d seconds: exactly R * d. */
    unsigned n = 0;
    for (unsigned k = 0; k < 3; k++)
        for (uint64_t i = 0; bench_sched_at(0, 800, 3, k, i) < 3000000000ULL; i++)
            n++;
    cr_assert(eq(u32, n, 2400));
}
